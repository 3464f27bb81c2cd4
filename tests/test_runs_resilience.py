"""Delivery stays exact when the channel layer drops messages or Redis restarts mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from uuid import UUID

import httpx
import pytest
from django.conf import settings

from audit.models import AuditEntry
from runs.models import Run, RunEvent, RunStatus
from tests import flowgraphs
from tests.live import LiveStack, PrivateRedis, free_port, subprocess_env
from tests.wsclient import (
    Received,
    assert_exactly_the_log,
    collect_until_completed,
    connect,
    in_thread,
    next_message,
    start_run,
    stored_log,
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
        # Redis stays away until the worker has logged more of the run (events published
        # into the void), instead of for a second: the client must still get every one.
        cut = await in_thread(lambda: RunEvent.objects.filter(run_id=run_id).count())
        for _ in range(600):
            if await in_thread(lambda: RunEvent.objects.filter(run_id=run_id).count()) > cut + 5:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the worker logged nothing while Redis was away")
        redis.start()  # same port, empty
        await collect_until_completed(ws, run_id, received, timeout=60)
        await ws.close()
        return run_id, received

    run_id, received = asyncio.run(scenario())
    assert_exactly_the_log(received, run_id)
    assert Run.objects.get(pk=run_id).status == RunStatus.SUCCEEDED
    assert RunEvent.objects.filter(run_id=run_id, event="completed").count() == 1


def test_a_run_start_while_redis_is_down_is_refused_and_the_socket_stays_open(
    private_stack, workspace_a, erin_editor, token_for
):
    # The rate counters live in Redis: the start fails inside its transaction, so the
    # client gets `unavailable`, nothing is written, and the socket stays served.
    stack, redis = private_stack
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="back again", delay_ms=0)
    token = token_for(workspace_a, erin_editor)
    start = {"action": "run", "flow": flow.pk, "inputs": {"input": "x"}}

    async def scenario() -> tuple[dict, dict, str, Received]:
        ws, _ = await connect(stack.ws_url, "acme", token=token)
        redis.stop()
        try:
            await ws.send(json.dumps(start))
            refused = await next_message(ws, timeout=60)
            await ws.send("not json")  # the connection is still served
            still_open = await next_message(ws)
            # A handshake meanwhile succeeds too: the layer subscribes it once Redis is back.
            late, _ = await connect(stack.ws_url, "acme", token=token)
        finally:
            redis.start()  # same port, empty
        run_id = await start_run(late, start)
        received = Received()
        await collect_until_completed(late, run_id, received, timeout=60)
        await ws.close()
        await late.close()
        return refused, still_open, run_id, received

    refused, still_open, run_id, received = asyncio.run(scenario())
    assert refused["event"] == "rejected" and refused["code"] == "unavailable", refused
    assert "try again" in refused["message"].lower()
    assert still_open["code"] == "invalid_json"
    assert list(Run.objects.values_list("pk", flat=True)) == [UUID(run_id)]  # nothing else
    assert AuditEntry.objects.filter(action="run.start").count() == 1
    assert_exactly_the_log(received, run_id)
    assert Run.objects.get(pk=run_id).status == RunStatus.SUCCEEDED


@contextlib.contextmanager
def _broker_apart(
    suffix: str, *, worker: str | None, **env: str
) -> Iterator[tuple[LiveStack, PrivateRedis]]:
    """Daphne (and `worker`, running the beat schedule) whose broker is a Redis of its own
    (FLOWDECK_BROKER_URL) apart from the channel layer's and the cache's."""
    layer, broker = PrivateRedis(), PrivateRedis()
    layer.start()
    broker.start()
    stack = LiveStack(
        port=free_port(),
        env=subprocess_env(
            REDIS_URL=layer.url,
            FLOWDECK_BROKER_URL=broker.url,
            FLOWDECK_CHANNEL_PREFIX=f"{settings.CHANNEL_PREFIX}{suffix}",
            **env,
        ),
    )
    try:
        stack.start_daphne()
        if worker is not None:
            stack.start_worker(worker, beat=True)
        yield stack, broker
    finally:
        stack.stop()
        broker.stop()
        layer.stop()


@pytest.fixture
def split_broker_stack(django_db_setup: None) -> Iterator[tuple[LiveStack, PrivateRedis]]:
    with _broker_apart("b", worker="bworker") as started:
        yield started


def test_a_run_accepted_while_the_broker_is_down_runs_once_it_is_back(
    split_broker_stack, workspace_a, erin_editor, token_for
):
    # The run is committed before its task is sent: when the broker refuses the task, the
    # run stays accepted and queued, and the reaper hands it over when the broker is back.
    stack, broker = split_broker_stack
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="late but whole", delay_ms=0)
    token = token_for(workspace_a, erin_editor)

    async def scenario() -> tuple[str, bool, Received]:
        ws, _ = await connect(stack.ws_url, "acme", token=token)
        broker.stop()
        try:
            run_id = await start_run(
                ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "x"}}
            )
            pending = await in_thread(lambda: Run.objects.get(pk=run_id).dispatch_pending)
        finally:
            broker.start()  # same port, empty
        received = Received()
        await collect_until_completed(ws, run_id, received, timeout=90)
        await ws.close()
        return run_id, pending, received

    run_id, pending, received = asyncio.run(scenario())
    assert pending, "a run whose task the broker refused is flagged for the reaper"
    assert_exactly_the_log(received, run_id)
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.SUCCEEDED and not run.dispatch_pending
    assert run.attempts == 1


@pytest.fixture
def emptied_broker_stack(django_db_setup: None) -> Iterator[tuple[LiveStack, PrivateRedis]]:
    """No worker yet (the test starts it), and a short redispatch bound."""
    with _broker_apart("e", worker=None, FLOWDECK_REDISPATCH_SECONDS="3") as started:
        yield started


def test_runs_whose_tasks_an_emptied_broker_lost_start_once_it_is_back(
    emptied_broker_stack, workspace_a, erin_editor, token_for
):
    # No worker yet: the accepted runs' tasks wait in the broker, which then restarts
    # empty (no persistence). The reaper finds queued runs the broker no longer holds and
    # sends them again; each runs exactly once.
    stack, broker = emptied_broker_stack
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="found again", delay_ms=0)
    token = token_for(workspace_a, erin_editor)
    headers = {"Authorization": f"Bearer {token}"}
    run_ids = []
    for _ in range(5):
        response = httpx.post(
            f"{stack.http_url}/api/w/acme/flows/{flow.pk}/runs",
            json={"inputs": {"input": "x"}},
            headers=headers,
        )
        assert response.status_code == 202, response.text
        run_ids.append(response.json()["run_id"])
    broker.stop()
    broker.start()  # same port, empty: the five tasks are gone
    assert not Run.objects.filter(pk__in=run_ids).exclude(status=RunStatus.QUEUED).exists()
    stack.start_worker("eworker", beat=True)
    deadline = time.monotonic() + 60
    while Run.objects.filter(pk__in=run_ids, status=RunStatus.SUCCEEDED).count() < len(run_ids):
        assert time.monotonic() < deadline, list(
            Run.objects.filter(pk__in=run_ids).values_list("status", flat=True)
        )
        time.sleep(0.2)
    for run in Run.objects.filter(pk__in=run_ids):
        assert run.attempts == 1 and run.outputs == {"output": "found again"}
        log = stored_log(str(run.pk))
        assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
        assert [e["event"] for e in log].count("completed") == 1
