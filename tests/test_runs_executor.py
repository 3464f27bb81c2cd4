"""The executor, the lease and the event sink, in-process (the real sink thread and database)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership
from flows import crypto
from flows.builder import validate_graph
from flows.models import Credential
from runs import services
from runs.engine import executor
from runs.engine.executor import NodeContext, execute_claimed_run
from runs.engine.persistence import (
    MAX_STATEMENT_EVENTS,
    PersistStrategy,
    strategy_for_batch,
    strategy_for_vendor,
)
from runs.engine.sink import EventSink, get_sink
from runs.engine.writer import RunWriter
from runs.models import Run, RunEvent, RunStatus
from runs.tasks import execute_run
from tests import flowgraphs
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.wsclient import stored_log

pytestmark = pytest.mark.django_db(transaction=True)


def _queued(workspace, user, graph) -> Run:
    return flowgraphs.queued_run(workspace, user, graph, {"input": "hi"})


def _events(run: Run) -> list[str]:
    return [e["event"] for e in stored_log(str(run.pk))]


def test_a_run_is_claimed_once_and_a_redelivered_task_does_nothing(workspace_a, erin_editor):
    run = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply="a b c", delay_ms=0))
    claimed = services.run_claim(run_id=str(run.pk), task_id="t1", worker="w1")
    assert claimed is not None and claimed.lease_token == 1
    assert services.run_claim(run_id=str(run.pk), task_id="t2", worker="w2") is None
    execute_claimed_run(claimed)
    log = stored_log(str(run.pk))
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert log[-1]["event"] == "completed" and log[-1]["status"] == "success"
    execute_run.run(str(run.pk))  # a duplicate delivery after the run finished
    assert stored_log(str(run.pk)) == log
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


class _WatchedLock:
    """The executor's start lock, telling when a second thread is held up by it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self) -> _WatchedLock:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_runs_start_one_at_a_time_and_a_claim_waits_for_the_start_in_progress(
    workspace_a, erin_editor, monkeypatch
):
    """With 50 runs arriving together, concurrent claims and plans starve the run loop that
    streams every other run of the process: starts take turns instead.

    Checked when the task is known to be waiting for the lock (not after a sleep): at that
    moment its run must still be queued. A task that claimed before taking the lock would
    reach the lock only after its claim (the plan takes it too), and be seen running."""
    starting = _WatchedLock()
    monkeypatch.setattr(executor, "_starting", starting)
    run = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply="a b", delay_ms=0))
    task = threading.Thread(
        target=executor.execute_queued_run,
        kwargs={"run_id": str(run.pk), "task_id": "t", "worker": "w"},
    )
    with starting:  # another run is being started
        task.start()
        assert starting.contended.wait(30), "the task never asked for the start lock"
        run.refresh_from_db()
        assert run.status == RunStatus.QUEUED and run.lease_token == 0
    task.join(30)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.lease_token == 1
    assert _events(run)[-1] == "completed"


def _wait_until(condition, what: str, timeout: float = 30) -> None:
    """Poll `condition` until it holds; the deadline is a safety net that fails the test."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def test_a_stale_lease_holder_is_fenced_off_after_the_reaper_ends_the_run(workspace_a, erin_editor):
    run = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply="x", delay_ms=0))
    claimed = services.run_claim(run_id=str(run.pk), task_id="t1", worker="w1")
    writer = get_sink().open(claimed)
    writer.emit("run_started", "", {"data": {}})
    writer.emit("node_started", "model", {"data": {}})
    # The sink persists what it has (lifecycle events wait at most one window for company).
    _wait_until(lambda: RunEvent.objects.filter(run=run).count() == 2, "the first two events")
    # The lease lapses and the reaper ends the run while the row is locked: the sink's
    # heartbeat (every second, often right after a write) cannot extend the lease in
    # between, as it could if the worker were alive; it finds the token bumped after.
    with transaction.atomic():
        Run.objects.select_for_update().get(pk=run.pk)
        Run.objects.filter(pk=run.pk).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        assert services.reap_stale_runs() == [str(run.pk)]
    # The worker wakes up and carries on: nothing it writes may land after `completed`.
    writer.emit("node_finished", "model", {"data": "late"})
    writer.finish(status=RunStatus.SUCCEEDED, completed_status="success", outputs={})
    assert writer.done.wait(5)
    assert writer.fenced
    ended = Run.objects.get(pk=run.pk)
    assert ended.status == RunStatus.FAILED and "stopped responding" in ended.error
    log = stored_log(str(run.pk))
    assert [e["event"] for e in log][-2:] == ["error", "completed"]
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert log[-1]["status"] == "error"
    assert not RunEvent.objects.filter(run=run, payload__data="late").exists()


def test_independent_branches_run_concurrently(workspace_a, erin_editor):
    node = {"position": {"x": 0, "y": 0}}
    graph = {
        "nodes": [
            {**node, "id": "input", "component": "io.chat_input", "params": {}},
            {
                **node,
                "id": "left",
                "component": "llm.demo",
                "params": {"reply": "l1 l2 l3 l4", "delay_ms": 60},
            },
            {
                **node,
                "id": "right",
                "component": "llm.demo",
                "params": {"reply": "r1 r2 r3 r4", "delay_ms": 60},
            },
            {**node, "id": "out_l", "component": "io.text_output", "params": {}},
            {**node, "id": "out_r", "component": "io.text_output", "params": {}},
        ],
        "edges": [
            {"source": "input", "source_port": "text", "target": "left", "target_port": "prompt"},
            {"source": "input", "source_port": "text", "target": "right", "target_port": "prompt"},
            {"source": "left", "source_port": "text", "target": "out_l", "target_port": "text"},
            {"source": "right", "source_port": "text", "target": "out_r", "target_port": "text"},
        ],
    }
    run = _queued(workspace_a, erin_editor, graph)
    execute_claimed_run(services.run_claim(run_id=str(run.pk), task_id="t", worker="w"))
    log = stored_log(str(run.pk))
    seq = {(e["event"], e["node_id"]): e["seq"] for e in log}
    # Each branch started before the other finished: they overlapped.
    assert seq[("node_started", "right")] < seq[("node_finished", "left")]
    assert seq[("node_started", "left")] < seq[("node_finished", "right")]
    assert Run.objects.get(pk=run.pk).outputs == {"out_l": "l1 l2 l3 l4", "out_r": "r1 r2 r3 r4"}


def test_a_node_error_is_an_error_event_on_that_node_and_the_run_ends_in_error(
    workspace_a, erin_editor
):
    with FakeOpenAIServer(fail_status=500) as server:
        credential = Credential.objects.create(
            workspace=workspace_a,
            name="down",
            provider="openai",
            base_url=server.base_url,
            api_key_encrypted=crypto.encrypt("sk-secret-value"),
            created_by=erin_editor,
        )
        run = _queued(workspace_a, erin_editor, flowgraphs.openai_graph(credential.pk))
        execute_claimed_run(services.run_claim(run_id=str(run.pk), task_id="t", worker="w"))
    log = stored_log(str(run.pk))
    errors = [e for e in log if e["event"] == "error"]
    assert [e["node_id"] for e in errors] == ["model"]
    assert "sk-secret-value" not in str(log)
    assert log[-1] == {**log[-1], "event": "completed", "status": "error"}
    skipped = [e for e in log if e["event"] == "node_finished" and e["node_id"] == "output"]
    assert skipped and skipped[0]["skipped"] is True
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED


def test_the_run_time_limit_ends_a_run_with_a_clear_error(workspace_a, erin_editor, settings):
    settings.FLOWDECK = {**settings.FLOWDECK, "RUN_TIME_LIMIT_SECONDS": 1}
    run = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply=" slow" * 100, delay_ms=50))
    execute_claimed_run(services.run_claim(run_id=str(run.pk), task_id="t", worker="w"))
    ended = Run.objects.get(pk=run.pk)
    assert ended.status == RunStatus.FAILED and "time limit" in ended.error
    assert _events(ended)[-2:] == ["error", "completed"]


def test_tokens_are_coalesced_into_few_rows(workspace_a, erin_editor):
    words = " ".join(f"w{i}" for i in range(300))
    run = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply=words, delay_ms=0))
    execute_claimed_run(services.run_claim(run_id=str(run.pk), task_id="t", worker="w"))
    tokens = [e for e in stored_log(str(run.pk)) if e["event"] == "on_token"]
    assert "".join(e["data"] for e in tokens) == words
    assert len(tokens) < 60, f"{len(tokens)} token rows for 300 tokens: not coalesced"


def test_cancel_of_a_queued_run_ends_it_at_once(workspace_a, erin_editor):
    run = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply="x", delay_ms=0))
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    services.run_cancel(workspace=workspace_a, acting=acting, run=run)
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    assert stored_log(str(run.pk))[-1]["status"] == "cancelled"
    assert services.run_claim(run_id=str(run.pk), task_id="t", worker="w") is None


def test_a_nul_character_from_a_model_is_stored_and_breaks_no_other_run(workspace_a, erin_editor):
    # PostgreSQL refuses NUL in text and jsonb: unchecked, one such token would fail the
    # sink's shared batch for every run in it.
    with FakeOpenAIServer(tokens=["a\x00b", " c"], delay=0.02) as server:
        nul = _queued(
            workspace_a,
            erin_editor,
            flowgraphs.openai_flow(workspace_a, erin_editor, server.base_url).versions.get().graph,
        )
        other = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply="ok", delay_ms=20))
        threads = [
            threading.Thread(
                target=lambda r=r: execute_claimed_run(
                    services.run_claim(run_id=str(r.pk), task_id="t", worker="w")
                )
            )
            for r in (nul, other)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for run in (nul, other):
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED
    text = "".join(e["data"] for e in stored_log(str(nul.pk)) if e["event"] == "on_token")
    assert text == "a\ufffdb c"


def test_a_lone_surrogate_from_a_model_is_stored_and_breaks_no_other_run(
    workspace_a, erin_editor
):
    # Valid JSON from the provider ("\\ud800"), but not Unicode: PostgreSQL refuses it, and
    # a refused batch fences every run in it.
    with FakeOpenAIServer(tokens=["x\ud800y", " z"], delay=0.02) as server:
        odd = _queued(
            workspace_a,
            erin_editor,
            flowgraphs.openai_flow(workspace_a, erin_editor, server.base_url).versions.get().graph,
        )
        other = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply="ok", delay_ms=20))
        threads = [
            threading.Thread(
                target=lambda r=r: execute_claimed_run(
                    services.run_claim(run_id=str(r.pk), task_id="t", worker="w")
                )
            )
            for r in (odd, other)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for run in (odd, other):
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED
    text = "".join(e["data"] for e in stored_log(str(odd.pk)) if e["event"] == "on_token")
    assert text == "x\ufffdy z"
    assert odd.outputs == {"output": "x\ufffdy z"}


def test_a_graph_with_nul_or_nan_is_refused_with_a_clear_problem(workspace_a):
    for bad in ("a\x00b", float("nan"), float("inf")):
        graph = flowgraphs.demo_graph(reply="x", delay_ms=0)
        graph["nodes"][1]["params"]["reply"] = bad
        problems = validate_graph(graph, workspace_a)
        assert [p.code for p in problems] in (["not_text"], ["not_json"]), problems


def test_a_batch_the_database_refuses_fences_its_runs_and_leaves_no_hole_in_the_log(
    workspace_a, erin_editor
):
    run = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply="x", delay_ms=0))
    claimed = services.run_claim(run_id=str(run.pk), task_id="t", worker="w")
    sink = EventSink()  # not started: the test drives one write itself
    writer = RunWriter(
        sink,
        run_id=str(claimed.pk),
        workspace_id=999_999_999,  # no such workspace: the INSERT violates its foreign key
        session_id=claimed.session_id,
        lease_token=claimed.lease_token,
        last_seq=claimed.last_seq,
    )
    writer.emit("run_started", "", {"data": {}})
    events, final = writer.take(time.monotonic(), 0.0)
    assert [e.seq for e in events] == [1]

    assert sink._write([(writer, events, final)]) is False  # tried twice, then gave up
    assert writer.fenced and writer.should_stop
    assert not RunEvent.objects.filter(run=run).exists()
    assert Run.objects.get(pk=run.pk).last_seq == 0

    # Its lease lapses; the reaper ends it, numbering right after what was committed.
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.reap_run(run.pk)
    log = stored_log(str(run.pk))
    assert [(e["seq"], e["event"]) for e in log] == [(1, "error"), (2, "completed")]
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED


def test_the_portable_write_path_keeps_the_same_guarantees(workspace_a, erin_editor):
    # PostgreSQL batches are one statement; other databases (and oversized batches) take
    # the ORM transaction. A sink of that strategy here, so CI, on PostgreSQL, covers it.
    sink = EventSink(strategy=PersistStrategy.PORTABLE)
    run = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply="p q r s", delay_ms=5))
    execute_claimed_run(services.run_claim(run_id=str(run.pk), task_id="t", worker="w"), sink=sink)
    run.refresh_from_db()
    log = stored_log(str(run.pk))
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert log[-1]["event"] == "completed" and log[-1]["status"] == "success"
    assert run.status == RunStatus.SUCCEEDED and run.last_seq == len(log)
    assert run.lease_expires_at is None and run.finished_at is not None
    text = "".join(e["data"] for e in log if e["event"] == "on_token")
    assert text == "p q r s"


def test_a_batch_takes_the_portable_strategy_when_it_does_not_fit_one_statement():
    writer = RunWriter(
        EventSink(), run_id="r", workspace_id=1, session_id="s", lease_token=1, last_seq=0
    )
    for n in range(3):
        writer.emit("error", "", {"message": str(n)})
    events, final = writer.take(time.monotonic(), 0.0)
    single, portable = PersistStrategy.SINGLE_STATEMENT, PersistStrategy.PORTABLE
    assert strategy_for_vendor("postgresql") is single
    assert strategy_for_vendor("sqlite") is portable
    assert strategy_for_batch(single, [(writer, events, final)]) is single
    assert strategy_for_batch(portable, [(writer, events, final)]) is portable
    assert strategy_for_batch(single, [(writer, [], {"status": "failed"})]) is portable
    too_many = events * (MAX_STATEMENT_EVENTS // len(events) + 1)
    assert strategy_for_batch(single, [(writer, too_many, final)]) is portable


def test_lifecycle_events_ride_with_the_next_token_or_leave_within_the_window():
    """run_started / node_started / node_finished don't wake the sink: a run's start and its
    first token are one write. They never wait longer than the coalescing window, and any
    other event takes them along at once.

    The sink's clock is passed in: "young" is asked with a reading taken just before the
    events were emitted (so they are younger than the window however long the machine
    takes to get from the emit to the take), "old" with a reading a whole window after."""
    window = 0.025
    writer = RunWriter(
        EventSink(), run_id="r", workspace_id=1, session_id="s", lease_token=1, last_seq=0
    )

    def take(now: float) -> list[tuple[int, str]]:
        events, _final = writer.take(now, window)
        return [(e.seq, e.event) for e in events]

    before = time.monotonic()
    writer.emit("run_started", "", {"data": {}})
    writer.emit("node_started", "model", {"data": {}})
    assert take(before) == []  # young lifecycle events wait...
    writer.emit("on_token", "model", {"data": "Hello"})
    assert take(before) == [(1, "run_started"), (2, "node_started"), (3, "on_token")]  # ...for this

    before = time.monotonic()
    writer.emit("node_finished", "model", {"data": "Hello"})
    assert take(before) == []
    assert take(time.monotonic() + window) == [(4, "node_finished")]  # or for the window

    before = time.monotonic()
    writer.emit("node_started", "tool", {"data": {}})
    writer.emit("on_tool_call", "tool", {"data": {"name": "t"}})
    assert take(before) == [(5, "node_started"), (6, "on_tool_call")]

    before = time.monotonic()
    writer.emit("node_started", "last", {"data": {}})
    writer.finish(status="succeeded", completed_status="success", outputs={})
    events, final = writer.take(before, window)
    assert [e.event for e in events] == ["node_started", "completed"] and final is not None


def _node_context(writer):
    run = SimpleNamespace(workspace_id=1, pk="r", session_id="s")
    return NodeContext(writer, run, "model")


def test_deliver_now_waits_for_the_next_publish_and_no_longer(monkeypatch):
    """A stream's first token: the node waits (bounded) until the sink has published it,
    so the chunks that follow don't compete with its write for the worker.

    Checked by order, with timers of the same loop as references (asyncio fires them in
    deadline order) and safety-net deadlines far above any bound that only fail the test:
    with a 30 s bound it is still waiting when the publish comes and returns right after
    it; with a 50 ms bound and no publish it returns after a 40 ms timer started before it
    fired, and by itself; for a closed writer it does not wait for an hour-long bound."""
    writer = RunWriter(
        EventSink(), run_id="r", workspace_id=1, session_id="s", lease_token=1, last_seq=0
    )
    ctx = _node_context(writer)

    async def waits_for_publish() -> list[str]:
        monkeypatch.setattr(executor, "DELIVERY_WAIT_SECONDS", 30)
        order: list[str] = []

        async def deliver() -> None:
            await ctx.deliver_now()
            order.append("delivered")

        waiting = asyncio.ensure_future(deliver())
        await asyncio.sleep(0.2)  # a head start, not a bound: the wait's own bound is 30 s

        def publish() -> None:  # as the publisher does, on its own thread
            order.append("published")
            writer.published()

        threading.Thread(target=publish).start()
        await asyncio.wait_for(waiting, 20)
        return order

    async def bounded() -> list[str]:
        monkeypatch.setattr(executor, "DELIVERY_WAIT_SECONDS", 0.05)
        order: list[str] = []

        async def reference() -> None:
            await asyncio.sleep(0.04)
            order.append("40 ms timer")

        timer = asyncio.ensure_future(reference())
        await asyncio.sleep(0)  # its deadline is set before deliver_now's
        await asyncio.wait_for(ctx.deliver_now(), 20)  # nobody publishes
        order.append("returned")
        await timer
        return order

    assert asyncio.run(waits_for_publish()) == ["published", "delivered"]
    assert asyncio.run(bounded()) == ["40 ms timer", "returned"]

    writer.finish(status="succeeded", completed_status="success", outputs={})
    monkeypatch.setattr(executor, "DELIVERY_WAIT_SECONDS", 3600)

    async def closed() -> None:  # a closed writer publishes nothing more: no wait
        await asyncio.wait_for(ctx.deliver_now(), 20)

    asyncio.run(closed())


def test_the_claim_loads_the_run_as_the_orm_does_and_only_once(workspace_a, erin_editor):
    """The claim is a conditional UPDATE, then one read of the run with its workspace and
    flow version; it gives the objects the ORM loads, and a second claim (a duplicate
    delivery) gets nothing."""
    run = _queued(workspace_a, erin_editor, flowgraphs.demo_graph(reply="x", delay_ms=0))
    claimed = services.run_claim(run_id=str(run.pk), task_id="task-1", worker="w1")
    assert services.run_claim(run_id=str(run.pk), task_id="task-2", worker="w2") is None

    stored = Run.objects.select_related("workspace", "flow_version").get(pk=run.pk)
    for loaded, expected in (
        (claimed, stored),
        (claimed.workspace, stored.workspace),
        (claimed.flow_version, stored.flow_version),
    ):
        for field in type(expected)._meta.concrete_fields:
            assert getattr(loaded, field.attname) == getattr(expected, field.attname), field
    assert claimed.status == RunStatus.RUNNING and claimed.task_id == "task-1"
    assert (claimed.attempts, claimed.lease_token) == (run.attempts + 1, run.lease_token + 1)
    assert claimed.inputs == {"input": "hi"} and claimed.flow_version.graph["nodes"]
    assert not claimed._state.adding and claimed._state.db == "default"
    execute_claimed_run(claimed)  # and it runs
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
