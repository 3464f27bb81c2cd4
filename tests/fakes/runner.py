"""Run a component, or a whole ExecutionPlan, through the real engine in memory.

The executor's own parts do the work: `PlanRunner` (inputs, skipping, node events),
`NodeContext` (what a component sees: emit, cancel checks, model streams) and `RunWriter`
(seq, payloads made storable, the registry's checks). Only the sink is replaced, by
`MemorySink`, which records what the event sink would persist, as the database would
store it, and then "publishes" it (waking a stream waiting for its first token to go
out). It coalesces nothing (a window of 0), so a test sees each chunk a component
streamed as its own `on_token` event.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from config.jsontext import storable_json
from flows.builder import ExecutionPlan
from runs.engine.executor import NodeContext, PlanRunner
from runs.engine.runloop import get_run_loop
from runs.engine.writer import PendingEvent, RunWriter
from runs.models import Run


class _CountingWriter(RunWriter):
    """A RunWriter that counts how often a stream waited for its events to go out."""

    deliveries = 0

    def after_next_publish(self, callback: Callable[[], None]) -> None:
        self.deliveries += 1
        super().after_next_publish(callback)


class MemorySink:
    """Stands in for runs.engine.sink.EventSink: when woken, takes what every writer has
    due and records it at once; publishes it once the waking task yields, as the sink's
    publisher thread would."""

    window = 0.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.writers: list[_CountingWriter] = []
        self.persisted: list[PendingEvent] = []  # with payloads as stored (JSON round trip)
        self.finals: list[dict[str, Any]] = []
        self.listeners: list[Callable[[PendingEvent], None]] = []  # told of each, in order
        self._publish_scheduled = False

    def open(self, run: Run) -> _CountingWriter:
        writer = _CountingWriter(
            self,
            run_id=str(run.pk),
            workspace_id=run.workspace_id,
            session_id=run.session_id,
            lease_token=run.lease_token,
            last_seq=run.last_seq,
        )
        self.writers.append(writer)
        return writer

    def wake(self) -> None:
        self._persist()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop: nobody there waits for a publish
            self.publish()
            return
        with self._lock:
            if self._publish_scheduled:
                return
            self._publish_scheduled = True
        loop.call_soon(self.publish)

    def _persist(self) -> None:
        with self._lock:
            for writer in self.writers:
                events, final = writer.take(time.monotonic(), self.window)
                for event in events:
                    event.payload = json.loads(storable_json(event.payload))
                self.persisted.extend(events)
                for event in events:
                    for listener in self.listeners:
                        listener(event)
                if final is not None:
                    self.finals.append(final)
                if events:
                    writer.persisted_seq = events[-1].seq

    def publish(self) -> None:
        with self._lock:
            self._publish_scheduled = False
        for writer in self.writers:
            writer.published()

    def flush(self) -> None:
        """Persist and publish whatever is still pending (what a test reads is complete)."""
        self._persist()
        self.publish()

    def node(self, node_id: str) -> NodeRecord:
        return NodeRecord(self, node_id)


class NodeRecord:
    """What one node of a recorded run emitted, in order."""

    def __init__(self, sink: MemorySink, node_id: str) -> None:
        self.sink = sink
        self.node_id = node_id

    @property
    def events(self) -> list[tuple[str, Any]]:
        """(event, data) of every event of this node, as persisted."""
        self.sink.flush()
        return [
            (e.event, e.payload.get("data"))
            for e in self.sink.persisted
            if e.node_id == self.node_id
        ]

    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    @property
    def tokens(self) -> str:
        return "".join(self.of("on_token"))


def memory_run(workspace_id: int, session_id: str, inputs: dict[str, str] | None = None) -> Run:
    """An unsaved Run: what the executor reads of a claimed run, nothing in the database."""
    return Run(workspace_id=workspace_id, session_id=session_id, inputs=inputs or {})


class RecordingContext(NodeContext):
    """The real NodeContext of a one-node run whose sink is a MemorySink; adds read-outs
    (`events`, `of`, `tokens`, `delivered`) and `cancel()`."""

    def __init__(
        self, workspace_id: int, *, session_id: str = "test-session", node_id: str = "node"
    ) -> None:
        self.sink = MemorySink()
        run = memory_run(workspace_id, session_id)
        self.writer = self.sink.open(run)
        super().__init__(self.writer, run, node_id)
        self.record = self.sink.node(node_id)

    def on_event(self, callback: Callable[[str, Any], None]) -> None:
        """Call `callback(event, data)` for each event of this node as it is persisted
        (with no coalescing window, as the component emits it), e.g. to interleave a
        component's tokens with other tasks of the same loop."""
        node_id = self.node_id

        def told(event: PendingEvent) -> None:
            if event.node_id == node_id:
                callback(event.event, event.payload.get("data"))

        self.sink.listeners.append(told)

    def cancel(self) -> None:
        """As the sink thread does when the run's cancel is requested."""
        self.writer.mark_cancelled()

    @property
    def events(self) -> list[tuple[str, Any]]:
        return self.record.events

    def of(self, event: str) -> list[Any]:
        return self.record.of(event)

    @property
    def tokens(self) -> str:
        return self.record.tokens

    @property
    def delivered(self) -> int:
        """How often the node waited for what it streamed to go out (its first token)."""
        return self.writer.deliveries


def run_plan(
    plan: ExecutionPlan, inputs: dict[str, str], *, workspace_id: int, session_id: str = "s1"
) -> tuple[dict[str, dict[str, Any] | None], dict[str, NodeRecord]]:
    """Execute `plan` with the executor's PlanRunner on the worker's run loop; (outputs
    per node, or None if it was skipped or failed; what each node emitted)."""
    sink = MemorySink()
    run = memory_run(workspace_id, session_id, inputs)
    runner = PlanRunner(run, plan, sink.open(run))
    get_run_loop().run(runner.execute())
    sink.flush()
    return runner.results, {node_id: sink.node(node_id) for node_id in plan.order}


def run_component(component: Any, params: Any, built: Any, inputs: dict[str, Any], ctx: Any) -> Any:
    """Execute one component with `ctx` (a RecordingContext) on a loop of its own."""
    return asyncio.run(component.execute(built, params, inputs, ctx))
