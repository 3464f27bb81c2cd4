"""A node's retries with real processes (Daphne, a Celery worker, Redis, the database): a
client that keeps dropping and resuming while the node fails, times out and is retried
receives the run's log exactly, failed attempts included."""

from __future__ import annotations

import asyncio
import random

import pytest

from runs.models import Run, RunStatus
from tests import flowgraphs
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.wsclient import assert_exactly_the_log, follow_with_drops

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

TOKENS = [f" tok{i}" for i in range(120)]


def test_resume_across_retries_delivers_every_attempt_exactly(
    live_stack, workspace_a, erin_editor, token_for
):
    """Attempt 1 is answered 503; attempt 2 streams 30 tokens and stalls until its timeout;
    attempt 3 answers. The client drops at 10 random points and resumes each time."""
    token = token_for(workspace_a, erin_editor)
    with FakeOpenAIServer(
        tokens=TOKENS, delay=0.004, fail_first=1, stall_after=30, stall_first=1
    ) as server:
        credential = flowgraphs.openai_credential(workspace_a, erin_editor, server.base_url)
        graph = flowgraphs.openai_graph(credential.pk)
        graph["nodes"][1]["policy"] = {"retries": 2, "backoff_seconds": 0.2, "timeout_seconds": 5}
        flow = flowgraphs.save_flow(workspace_a, erin_editor, graph)

        run_id, received = asyncio.run(
            follow_with_drops(
                live_stack.ws_url,
                "acme",
                token,
                {"action": "run", "flow": flow.pk, "inputs": {"input": "hi"}},
                drops=10,
                rng=random.Random(17),
                most=8,
            )
        )
    log = assert_exactly_the_log(received, run_id)
    model = [e for e in log if e["node_id"] == "model"]
    retries = [e for e in model if e["event"] == "node_retry"]
    assert [(e["attempt"], e["of"], e["code"]) for e in retries] == [
        (2, 3, "server_error"),
        (3, 3, "timeout"),
    ]
    second, third = model.index(retries[0]), model.index(retries[1])
    stalled = "".join(e["data"] for e in model[second:third] if e["event"] == "on_token")
    answered = "".join(e["data"] for e in model[third:] if e["event"] == "on_token")
    assert stalled == "".join(TOKENS[:30])  # the failed attempt's tokens stay in the log
    assert answered == "".join(TOKENS)
    assert model[-1]["event"] == "node_finished" and model[-1]["attempts"] == 3
    assert model[-1]["data"] == "".join(TOKENS)
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"output": "".join(TOKENS)}
