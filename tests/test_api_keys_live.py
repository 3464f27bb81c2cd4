"""A key scoped to one flow, end to end with real processes (Daphne, a Celery worker,
Redis, the database): the official `openai` SDK and the one-call run API run its flow and
are refused on another flow of the same workspace, which starts nothing."""

from __future__ import annotations

import httpx
import openai
import pytest

from accounts.models import Membership
from accounts.services import api_token_create
from chat.services import flow_publish
from runs.models import Run, RunStatus
from tests import flowgraphs

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def test_a_flow_scoped_key_runs_its_flow_and_no_other(
    live_stack, workspace_a, erin_editor, alice_owner
):
    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    mine = flowgraphs.demo_flow(workspace_a, erin_editor, reply="from mine", delay_ms=0)
    mine.name = "Mine"
    mine.save()
    other = flowgraphs.demo_flow(workspace_a, erin_editor, reply="from other", delay_ms=0)
    other.name = "Other"
    other.save()
    for flow in (mine, other):
        flow_publish(workspace=workspace_a, acting=owner, flow=flow, version_number=1)
    key = api_token_create(
        workspace=workspace_a, user=erin_editor, name="widget", flow_ids=[mine.pk]
    ).secret

    client = openai.OpenAI(
        base_url=f"{live_stack.http_url}/api/w/acme/v1", api_key=key, max_retries=0
    )
    assert [m.id for m in client.models.list()] == ["mine"]
    answer = client.chat.completions.create(
        model="mine", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "from mine"
    streamed = client.chat.completions.create(
        model="mine", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "from mine"
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "model_not_found"

    api = httpx.Client(
        base_url=f"{live_stack.http_url}/api/w/acme",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    ran = api.post(f"/flows/{mine.pk}/run", json={"inputs": {"input": "hi"}})
    assert ran.status_code == 200, ran.text
    assert ran.json()["status"] == "succeeded"
    assert list(ran.json()["outputs"].values()) == ["from mine"]
    assert api.post(f"/flows/{other.pk}/run", json={"inputs": {"input": "hi"}}).status_code == 404
    assert api.get(f"/runs/{ran.json()['run_id']}").status_code == 200

    assert not Run.objects.filter(flow=other).exists()
    assert Run.objects.filter(flow=mine, status=RunStatus.SUCCEEDED).count() == 3
