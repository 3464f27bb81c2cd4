"""Usage and cost end to end with real processes (Daphne, a Celery worker, Redis, the
database) and the fake provider as a real HTTP server: what the provider reports is what
the run's log, the ledger, the day's roll-up and the OpenAI-compatible answer say."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from accounts.models import Membership
from chat.services import flow_publish
from runs.models import Run, RunStatus
from tests import flowgraphs
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.wsclient import stored_log
from usage.models import ModelPrice, UsageDay, UsageRecord, WorkspaceBudget
from usage.services import record_run_usage

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

TOKENS = [f" tok{i}" for i in range(40)]


@pytest.fixture
def fake_llm():
    with FakeOpenAIServer(tokens=TOKENS, delay=0.001) as server:
        yield server


def _client(live_stack: Any, token: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live_stack.http_url}/api/w/acme/v1", api_key=token, max_retries=0
    )


def _recorded(run: Run) -> list[UsageRecord]:
    """The run's ledger rows, once the worker has written them (after the run's end)."""
    for _ in range(200):
        rows = list(UsageRecord.objects.filter(run=run))
        if rows:
            return rows
        time.sleep(0.05)
    return []


def test_usage_rows_equal_what_the_provider_reported(
    live_stack, workspace_a, erin_editor, alice_owner, token_for, fake_llm
):
    ModelPrice.objects.create(
        model="fake", input_per_million=Decimal("2.5"), output_per_million=Decimal("10")
    )
    flow = flowgraphs.openai_flow(workspace_a, erin_editor, fake_llm.base_url)
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    model = flow_publish(
        workspace=workspace_a, acting=acting, flow=flow, version_number=1
    ).model_name
    client = _client(live_stack, token_for(workspace_a, erin_editor))

    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "how many tokens is this"}]
    )
    first = Run.objects.get(pk=completion.id.removeprefix("chatcmpl-"))
    # The flow's model client asked the provider for usage and got it, once.
    assert [r["stream_options"] for r in fake_llm.requests] == [{"include_usage": True}]
    reported = fake_llm.reported_usage[-1]
    assert reported["completion_tokens"] == len(TOKENS) and reported["prompt_tokens"] > 0

    finished = [e for e in stored_log(str(first.pk)) if e["event"] == "node_finished"]
    by_node = {e["node_id"]: e.get("usage") for e in finished}
    assert by_node == {
        "input": None,
        "model": {
            "input_tokens": reported["prompt_tokens"],
            "output_tokens": reported["completion_tokens"],
            "model": "fake",
        },
        "output": None,
    }
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == reported["prompt_tokens"]
    assert completion.usage.completion_tokens == reported["completion_tokens"]
    assert completion.usage.total_tokens == reported["total_tokens"]

    (row,) = _recorded(first)
    assert (row.node_id, row.model, row.input_tokens, row.output_tokens) == (
        "model",
        "fake",
        reported["prompt_tokens"],
        reported["completion_tokens"],
    )
    expected_cost = (
        Decimal(reported["prompt_tokens"]) * Decimal("2.5")
        + Decimal(reported["completion_tokens"]) * Decimal("10")
    ) / 1_000_000
    assert row.cost == expected_cost and row.currency == "USD"

    # A second run, streamed: the usage chunk is its real totals, and the day adds up.
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "again"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    second = Run.objects.get(pk=chunks[0].id.removeprefix("chatcmpl-"))
    assert second.status == RunStatus.SUCCEEDED
    again = fake_llm.reported_usage[-1]
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        again["prompt_tokens"],
        again["completion_tokens"],
    )
    assert len(_recorded(second)) == 1

    (day,) = UsageDay.objects.filter(workspace=workspace_a)
    assert (day.flow_id, day.user_id, day.model, day.calls) == (flow.pk, erin_editor.pk, "fake", 2)
    # Both runs were started with the key: the day's row is the key's.
    assert first.api_token is not None and first.api_token.name == "test"
    assert day.api_token_id == first.api_token_id == second.api_token_id
    assert day.input_tokens == reported["prompt_tokens"] + again["prompt_tokens"]
    assert day.output_tokens == reported["completion_tokens"] + again["completion_tokens"]
    assert day.cost == sum(r.cost for r in UsageRecord.objects.filter(workspace=workspace_a))

    # Recording a run again (a redelivered task, a reaper) counts nothing twice.
    assert record_run_usage(run_id=str(first.pk)) == 0
    day.refresh_from_db()
    assert day.calls == 2 and UsageRecord.objects.count() == 2


def test_a_budget_that_runs_out_mid_stream_ends_the_run_and_nothing_else_is_charged(
    live_stack, workspace_a, erin_editor, alice_owner, token_for, fake_llm
):
    flow = flowgraphs.openai_flow(workspace_a, erin_editor, fake_llm.base_url)
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    model = flow_publish(
        workspace=workspace_a, acting=acting, flow=flow, version_number=1
    ).model_name
    client = _client(live_stack, token_for(workspace_a, erin_editor))
    ask = [{"role": "user", "content": "spend some tokens"}]

    completion = client.chat.completions.create(model=model, messages=ask)
    first = Run.objects.get(pk=completion.id.removeprefix("chatcmpl-"))
    (row,) = _recorded(first)
    spent = row.input_tokens + row.output_tokens
    # 20 tokens left: the next reply (40 chunks) crosses it halfway.
    WorkspaceBudget.objects.create(workspace=workspace_a, monthly_tokens=spent + 20)

    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model=model, messages=ask)
    assert "budget_exceeded" in str(failed.value)
    second = Run.objects.exclude(pk=first.pk).get()
    assert second.status == RunStatus.FAILED and second.error.startswith("budget_exceeded")
    log = stored_log(str(second.pk))
    tokens = "".join(e["data"] for e in log if e["event"] == "on_token")
    assert tokens == "".join(TOKENS[:20])  # the 21st crossed the budget and was not sent
    (stopped,) = [e for e in log if e["event"] == "budget_exceeded"]
    assert stopped["node_id"] == "model"
    assert stopped["usage"] == {
        "input_tokens": 0,
        "output_tokens": 21,
        "model": "fake",
        "estimated": True,
    }
    assert [(e["event"], e["node_id"], e.get("skipped")) for e in log[-3:]] == [
        ("budget_exceeded", "model", None),
        ("node_finished", "output", True),  # nothing downstream ran
        ("completed", None, None),
    ]
    assert log[-1]["status"] == "error"
    assert not [e for e in log if e["event"] == "node_finished" and e["node_id"] == "model"]

    # The stopped call is charged what it streamed; nothing after it.
    (partial,) = _recorded(second)
    assert (partial.input_tokens, partial.output_tokens) == (0, 21)
    (day,) = UsageDay.objects.filter(workspace=workspace_a)
    assert day.input_tokens + day.output_tokens == spent + 21 and day.calls == 2

    # Spent: the next call is refused before anything runs (no run, no provider request).
    requests = len(fake_llm.requests)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=model, messages=ask)
    assert refused.value.code == "insufficient_quota"
    assert Run.objects.count() == 2 and len(fake_llm.requests) == requests == 2
    day.refresh_from_db()
    assert day.input_tokens + day.output_tokens == spent + 21 and day.calls == 2

    # The one-call run API refuses it too, with the same code.
    answer = httpx.post(
        f"{live_stack.http_url}/api/w/acme/flows/{flow.pk}/run",
        headers={"Authorization": f"Bearer {token_for(workspace_a, erin_editor)}"},
        json={"inputs": {"input": "hi"}},
        timeout=60,
    )
    assert answer.status_code == 429 and answer.json()["code"] == "budget_exceeded"
    assert Run.objects.count() == 2
