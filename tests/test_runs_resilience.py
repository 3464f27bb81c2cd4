"""Delivery stays exact when the channel layer drops messages or Redis restarts mid-run."""

from __future__ import annotations

import asyncio
import json

import pytest

from runs.models import Run, RunEvent, RunStatus
from tests import flowgraphs
from tests.wsclient import (
    Received,
    assert_exactly_the_log,
    collect_until_completed,
    connect,
    next_message,
    start_run,
)

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def test_a_watcher_that_stops_reading_still_gets_every_event_exactly_once(
    private_stack, workspace_a, erin_editor, bob_viewer, token_for
):
    stack, _redis = private_stack
    flow = flowgraphs.demo_flow(
        workspace_a, erin_editor, reply=" ".join(f"w{i}" for i in range(400)), delay_ms=8
    )
    editor = token_for(workspace_a, erin_editor)
    viewer = token_for(workspace_a, bob_viewer)

    async def scenario() -> tuple[str, Received, Received]:
        ws, _ = await connect(stack.ws_url, "acme", token=editor)
        run_id = await start_run(ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "x"}})
        sleeper, _ = await connect(stack.ws_url, "acme", token=viewer)
        await sleeper.send(json.dumps({"action": "resume", "run_id": run_id, "after_seq": 0}))
        runner = Received()
        await collect_until_completed(ws, run_id, runner)  # the sleeper reads nothing meanwhile
        assert len(runner.events) > 100, "the run must produce hundreds of events"
        late = Received()
        await collect_until_completed(sleeper, run_id, late)
        await ws.close()
        await sleeper.close()
        return run_id, runner, late

    run_id, runner, late = asyncio.run(scenario())
    assert_exactly_the_log(runner, run_id)
    assert_exactly_the_log(late, run_id)


def test_redis_restart_mid_run_loses_nothing(private_stack, workspace_a, erin_editor, token_for):
    stack, redis = private_stack
    flow = flowgraphs.demo_flow(
        workspace_a, erin_editor, reply=" ".join(f"r{i}" for i in range(300)), delay_ms=10
    )
    token = token_for(workspace_a, erin_editor)

    async def scenario() -> tuple[str, Received]:
        ws, session = await connect(stack.ws_url, "acme", token=token)
        run_id = await start_run(ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "x"}})
        received = Received()
        while sum(e["event"] == "on_token" for e in received.events) < 5:
            message = await next_message(ws)
            if message.get("run_id") == run_id:
                received.add(message)
        redis.stop()  # all groups, queues and in-flight layer messages are gone
        await asyncio.sleep(1.0)
        redis.start()  # same port, empty
        await collect_until_completed(ws, run_id, received, timeout=60)
        await ws.close()
        return run_id, received

    run_id, received = asyncio.run(scenario())
    assert_exactly_the_log(received, run_id)
    assert Run.objects.get(pk=run_id).status == RunStatus.SUCCEEDED
    assert RunEvent.objects.filter(run_id=run_id, event="completed").count() == 1
