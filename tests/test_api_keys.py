"""API keys that fit (issue 16 item 6): scoped to named flows, expiring, rate-limited,
with their last use; created on the tokens page (shown once, hashed at rest).

A flow-scoped key reaches its flows, their runs and conversations; another flow of the
same workspace is 404 (recorded as access.denied) on every door (the JSON API, the
one-call run API, the OpenAI-compatible endpoint), the workspace's lists are filtered to
its flows, and routes about the rest of the workspace refuse it (403, recorded)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken, Membership, TokenScope
from accounts.services import api_token_create, hash_secret
from audit.models import AuditEntry
from chat.services import conversation_create, flow_publish
from runs.models import Run, RunStatus
from tests import flowgraphs

pytestmark = pytest.mark.django_db


def _bearer(secret: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}", "content_type": "application/json"}


def _finished_run(flow: Any, user: Any) -> Run:
    now = timezone.now()
    return Run.objects.create(
        workspace=flow.workspace,
        flow=flow,
        flow_version=flow.versions.get(),
        session_id="keys",
        started_by=user,
        inputs={"input": "hi"},
        status=RunStatus.SUCCEEDED,
        started_at=now,
        finished_at=now,
    )


@pytest.fixture
def two_flows(workspace_a, erin_editor, alice_owner) -> dict[str, Any]:
    mine = flowgraphs.demo_flow(workspace_a, erin_editor, reply="mine", delay_ms=0)
    mine.name = "Mine"
    mine.save()
    other = flowgraphs.demo_flow(workspace_a, erin_editor, reply="other", delay_ms=0)
    other.name = "Other"
    other.save()
    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    for flow in (mine, other):
        flow_publish(workspace=workspace_a, acting=owner, flow=flow, version_number=1)
    return {
        "mine": mine,
        "other": other,
        "mine_run": _finished_run(mine, erin_editor),
        "other_run": _finished_run(other, erin_editor),
        "mine_chat": conversation_create(workspace=workspace_a, acting=acting, flow=mine),
        "other_chat": conversation_create(workspace=workspace_a, acting=acting, flow=other),
        "key": api_token_create(
            workspace=workspace_a, user=erin_editor, name="bot", flow_ids=[mine.pk]
        ).secret,
    }


def test_a_flow_scoped_key_reaches_its_flow_only(two_flows, erin_editor):
    mine, other, key = two_flows["mine"], two_flows["other"], two_flows["key"]
    client = Client()

    def get(path: str) -> Any:
        return client.get(f"/api/w/acme/{path}", **_bearer(key))

    # Its own flow, run and conversation.
    assert get(f"flows/{mine.pk}").status_code == 200
    assert get(f"runs/{two_flows['mine_run'].pk}").status_code == 200
    assert get(f"conversations/{two_flows['mine_chat'].pk}").status_code == 200
    assert get(f"flows/{mine.pk}/versions").status_code == 200

    # Another flow of the same workspace: not found, wherever it is asked for.
    denied_before = AuditEntry.objects.filter(action="access.denied").count()
    for path in (
        f"flows/{other.pk}",
        f"flows/{other.pk}/versions",
        f"flows/{other.pk}/publication",
        f"flows/{other.pk}/conversations",
        f"runs/{two_flows['other_run'].pk}",
        f"runs/{two_flows['other_run'].pk}/events",
        f"conversations/{two_flows['other_chat'].pk}",
    ):
        assert get(path).status_code == 404, path
    assert AuditEntry.objects.filter(action="access.denied").count() == denied_before + 7
    assert AuditEntry.objects.filter(
        action="access.denied", target=f"flow:{other.pk}", after__reason="key_scope"
    ).exists()

    # The workspace's lists hold only its flow's.
    assert [f["id"] for f in get("flows").json()] == [mine.pk]
    assert [r["id"] for r in get("runs").json()] == [str(two_flows["mine_run"].pk)]
    assert get(f"runs?flow={other.pk}").json() == []
    assert [c["id"] for c in get("conversations").json()] == [str(two_flows["mine_chat"].pk)]

    # Routes about the rest of the workspace refuse it (and say why), recorded.
    for path in ("members", "documents", "components", ""):
        response = get(path)
        assert response.status_code == 403, (path, response.content)
        assert "scoped to named flows" in response.json()["detail"]
    refused = client.post(
        "/api/w/acme/flows",
        json.dumps({"name": "new", "graph": flowgraphs.demo_graph(reply="x", delay_ms=0)}),
        **_bearer(key),
    )
    assert refused.status_code == 403
    assert AuditEntry.objects.filter(action="access.denied", after__path="/api/w/acme/members")


def test_a_flow_scoped_key_on_the_run_api_and_the_openai_endpoint(two_flows):
    mine, other, key = two_flows["mine"], two_flows["other"], two_flows["key"]
    client = Client()
    runs_before = Run.objects.count()

    refused = client.post(
        f"/api/w/acme/flows/{other.pk}/run",
        json.dumps({"inputs": {"input": "hi"}, "stream": True}),
        **_bearer(key),
    )
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"
    foreign_chat = client.post(
        f"/api/w/acme/flows/{mine.pk}/run",
        json.dumps(
            {
                "inputs": {"input": "hi"},
                "stream": True,
                "conversation_id": str(two_flows["other_chat"].pk),
            }
        ),
        **_bearer(key),
    )
    assert foreign_chat.status_code == 404
    assert Run.objects.count() == runs_before

    models = client.get("/api/w/acme/v1/models", **_bearer(key))
    assert [m["id"] for m in models.json()["data"]] == ["mine"]
    for model in ("other", f"flow-{other.pk}"):
        response = client.post(
            "/api/w/acme/v1/chat/completions",
            json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            **_bearer(key),
        )
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "model_not_found"
    assert Run.objects.count() == runs_before
    assert (
        AuditEntry.objects.filter(
            action="access.denied", target=f"flow:{other.pk}", after__reason="key_scope"
        ).count()
        == 3
    )

    # Its own flow starts (queued here; the live test runs it to the end).
    started = client.post(
        f"/api/w/acme/flows/{mine.pk}/run",
        json.dumps({"inputs": {"input": "hi"}, "stream": True}),
        **_bearer(key),
    )
    assert started.status_code == 200
    assert Run.objects.get(pk=started["X-Flowdeck-Run-Id"]).flow_id == mine.pk


def test_expired_and_revoked_keys_are_refused(workspace_a, erin_editor, two_flows):
    issued = api_token_create(
        workspace=workspace_a,
        user=erin_editor,
        name="soon",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    client = Client()
    assert client.get("/api/w/acme/flows", **_bearer(issued.secret)).status_code == 200
    ApiToken.objects.filter(pk=issued.token.pk).update(expires_at=timezone.now())
    assert client.get("/api/w/acme/flows", **_bearer(issued.secret)).status_code == 401
    expired = client.get("/api/w/acme/v1/models", **_bearer(issued.secret))
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "invalid_api_key"
    run = client.post(
        f"/api/w/acme/flows/{two_flows['mine'].pk}/run",
        json.dumps({"inputs": {"input": "hi"}, "stream": True}),
        **_bearer(issued.secret),
    )
    assert run.status_code == 401

    with pytest.raises(Exception, match="future"):
        api_token_create(
            workspace=workspace_a,
            user=erin_editor,
            name="past",
            expires_at=timezone.now() - timedelta(seconds=1),
        )


def test_a_keys_rate_limit_counts_its_requests_per_minute(workspace_a, erin_editor):
    issued = api_token_create(
        workspace=workspace_a, user=erin_editor, name="slow", rate_limit_per_minute=2
    )
    other = api_token_create(workspace=workspace_a, user=erin_editor, name="free").secret
    client = Client()
    for _attempt in range(3):  # a minute boundary mid-way restarts the count: try again
        minute = int(time.time() // 60)
        statuses = [
            client.get("/api/w/acme/flows", **_bearer(issued.secret)).status_code for _ in range(3)
        ]
        models = client.get("/api/w/acme/v1/models", **_bearer(issued.secret))
        if int(time.time() // 60) == minute:
            break
        time.sleep(1)
    assert statuses == [200, 200, 429]
    assert models.status_code == 429
    assert models.json()["error"]["code"] == "rate_limit_exceeded"
    assert client.get("/api/w/acme/flows", **_bearer(other)).status_code == 200  # per key


def test_last_use_is_recorded_at_most_once_a_minute(workspace_a, erin_editor):
    issued = api_token_create(workspace=workspace_a, user=erin_editor, name="used")
    token = ApiToken.objects.get(pk=issued.token.pk)
    assert token.last_used_at is None
    client = Client()
    client.get("/api/w/acme/flows", **_bearer(issued.secret))
    token.refresh_from_db()
    assert token.last_used_at is not None
    recent = timezone.now() - timedelta(seconds=30)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=recent)
    client.get("/api/w/acme/flows", **_bearer(issued.secret))
    token.refresh_from_db()
    assert token.last_used_at == recent  # not written again within the minute
    stale = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=stale)
    client.get("/api/w/acme/flows", **_bearer(issued.secret))
    token.refresh_from_db()
    assert token.last_used_at > stale


def test_the_tokens_page_creates_scoped_expiring_limited_keys(
    workspace_a, workspace_b, erin_editor, mallory_owner, client_for, two_flows
):
    client = client_for(erin_editor)
    mine = two_flows["mine"]
    foreign = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="x", delay_ms=0)
    foreign.name = "Bravo secret flow"
    foreign.save()
    before = ApiToken.objects.count()

    bad = [
        {"name": "x", "scope": "flows", "flows": [str(foreign.pk)]},  # another workspace's
        {"name": "x", "scope": "flows"},  # no flow named
        {"name": "x", "expires_on": "2001-01-01"},
        {"name": "x", "expires_on": "soon"},
        {"name": "x", "rate_limit": "-3"},
        {"name": "x", "rate_limit": "0"},
    ]
    for data in bad:
        response = client.post("/w/acme/tokens/", data, follow=True)
        assert response.status_code == 200, data
        assert [m.level_tag for m in response.context["messages"]] == ["error"], data
    assert ApiToken.objects.count() == before

    page = client.get("/w/acme/tokens/").content.decode()
    assert "Mine" in page and "Other" in page and "Bravo secret flow" not in page

    tomorrow = (timezone.now() + timedelta(days=2)).date().isoformat()
    created = client.post(
        "/w/acme/tokens/",
        {
            "name": "widget",
            "scope": "flows",
            "flows": [str(mine.pk)],
            "expires_on": tomorrow,
            "rate_limit": "30",
        },
    )
    assert created.status_code == 200
    token = ApiToken.objects.get(name="widget")
    secret = created.context["secret"]
    assert secret.startswith("fdk_") and token.token_hash == hash_secret(secret)
    assert secret not in str(ApiToken.objects.filter(pk=token.pk).values().get())
    assert token.scope == TokenScope.FLOWS and token.flow_ids == [mine.pk]
    assert token.expires_at is not None and token.expires_at.date().isoformat() == tomorrow
    assert token.rate_limit_per_minute == 30
    entry = AuditEntry.objects.filter(action="token.create").latest("pk")
    assert entry.after["flows"] == [mine.pk] and entry.after["rate_limit_per_minute"] == 30

    html = created.content.decode()
    assert secret in html  # shown once ...
    again = client.get("/w/acme/tokens/").content.decode()
    assert secret not in again  # ... and never again
    row = again[again.index("widget") :]
    row = row[: row.index("</tr>")]
    assert "Mine" in row and "30/min" in row and tomorrow in row and "never" in row
    Client().get("/api/w/acme/flows", **_bearer(secret))
    used = client.get("/w/acme/tokens/").content.decode()
    row = used[used.index("widget") :]
    assert "never" not in row[: row.index("</tr>")]  # last used shows

    revoked = client.post("/w/acme/tokens/", {"action": "revoke", "token": str(token.pk)})
    assert revoked.status_code == 302
    assert Client().get("/api/w/acme/flows", **_bearer(secret)).status_code == 401
