"""`RunWriter`: the in-memory head of one run's event log, owned by the lease holder.

The executor calls `emit` (cheap, thread-safe, never touches the database); the sink
thread `take`s what is due, persists it and hands it to the publisher. So:

- seq is assigned here, by the run's only writer, 1..N without gaps;
- tokens of a node are coalesced for one window (`sink.window`) into one `on_token` event,
  so a fast model is not one row and one frame per token; a token after a quiet spell
  wakes the sink at once (first-token latency);
- lazy (lifecycle) events do not wake the sink: they ride with what follows, or leave
  after one window;
- every payload is made storable here (`config.jsontext`), once, whoever emitted it;
- an event name the registry (`runs.events`) does not know is refused.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from django.utils import timezone

from config.jsontext import storable, storable_text
from runs.events import event_type, session_group, wire_message


class Sink(Protocol):
    """What a writer needs of the sink that drains it (runs.engine.sink.EventSink, or an
    in-memory stand-in in tests)."""

    window: float  # seconds tokens of a node are coalesced for

    def wake(self) -> None:
        """Something is due: take it soon (called from any thread, without the writer's
        lock held)."""


@dataclass
class PendingEvent:
    seq: int
    event: str
    node_id: str
    payload: dict[str, Any]
    ts: datetime

    def as_message(self, run_id: str) -> dict[str, Any]:
        return wire_message(self.event, run_id, self.seq, self.node_id, self.ts, self.payload)


@dataclass
class _TokenBuffer:
    parts: list[str] = field(default_factory=list)
    last_flush: float = 0.0  # when this node's tokens were last turned into an event
    item: int | None = None  # an iteration item's node: its events say which


# What the sink takes from a writer in one pass: its events and, once, the run's final row.
Final = dict[str, Any]


class RunWriter:
    """The in-memory head of one run's event log, owned by the lease holder."""

    def __init__(
        self,
        sink: Sink,
        *,
        run_id: str,
        workspace_id: int,
        session_id: str,
        lease_token: int,
        last_seq: int,
    ) -> None:
        self.sink = sink
        self.run_id = run_id
        self.workspace_id = workspace_id
        self.group = session_group(workspace_id, session_id)
        self.lease_token = lease_token
        self.next_seq = last_seq + 1
        self.persisted_seq = last_seq
        self._lock = threading.Lock()
        self._pending: list[PendingEvent] = []
        self._tokens: dict[str, _TokenBuffer] = {}
        self._final: Final | None = None
        self._due = False  # pending events that must go out at the sink's next pass
        self._lazy_since: float | None = None  # oldest pending lifecycle event, if any
        self.closed = False
        self.fenced = False
        self.cancel_requested = False
        self._on_stop: Callable[[], object] | None = None
        self._publish_waiters: list[Callable[[], None]] = []
        self.done = threading.Event()

    # --- called by the executor (any thread) --------------------------------------------

    def emit(self, event: str, node_id: str = "", payload: dict[str, Any] | None = None) -> None:
        """Append an event of the registry (UnknownEvent otherwise); `completed` is
        `finish`'s alone."""
        if event == "on_token":
            item = (payload or {}).get("item")
            self._add_token(node_id, str((payload or {}).get("data") or ""), item)
            return
        kind = event_type(event)
        if event == "completed":
            raise ValueError("the final `completed` event is written by RunWriter.finish")
        payload = storable(payload or {})
        with self._lock:
            if self.closed:
                return
            # Anything else first flushes buffered tokens, so the log stays chronological.
            lazy = kind.lazy and not self.has_buffered_tokens
            self._drain_tokens(None)
            self._append(event, node_id, payload)
            if not lazy:
                self._due = True
            elif self._lazy_since is None:
                self._lazy_since = time.monotonic()
        if not lazy:
            self.sink.wake()

    def _add_token(self, node_id: str, text: str, item: int | None = None) -> None:
        if not text:
            return
        text = storable_text(text)
        with self._lock:
            if self.closed:
                return
            buffer = self._tokens.get(node_id)
            if buffer is None:
                buffer = self._tokens[node_id] = _TokenBuffer(item=item)
            buffer.parts.append(text)
            # A token after a quiet spell goes out at once (first-token latency); the ones
            # that follow it within the window ride together in the next event.
            urgent = len(buffer.parts) == 1 and (
                time.monotonic() - buffer.last_flush >= self.sink.window
            )
        if urgent:
            self.sink.wake()

    def finish(
        self, *, status: str, completed_status: str, outputs: dict[str, Any], error: str = ""
    ) -> None:
        """Append the final `completed` event; the run row is finalised in the same commit."""
        final = {
            "status": status,
            "outputs": storable(outputs),
            "error": storable_text(error),
            "finished_at": timezone.now(),
        }
        with self._lock:
            if self.closed:
                return
            self._drain_tokens(None)
            self._append("completed", "", {"status": completed_status})
            self._final = final
            self.closed = True
        self.sink.wake()

    def pause(self) -> None:
        """End this execution without ending the run: what is buffered is written, the run
        becomes `waiting` and its lease is given up in the same commit; no `completed`."""
        final: Final = {"status": "waiting", "outputs": {}, "error": "", "finished_at": None}
        with self._lock:
            if self.closed:
                return
            self._drain_tokens(None)
            self._final = final
            self.closed = True
        self.sink.wake()

    @property
    def should_stop(self) -> bool:
        return self.cancel_requested or self.fenced

    def on_stop(self, callback: Callable[[], object]) -> None:
        """Call `callback` (from the sink thread) when the run must stop: cancelled or
        fenced. The executor uses it instead of polling, so idle runs cost no wake-ups."""
        self._on_stop = callback
        if self.should_stop:
            callback()

    def after_next_publish(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the publisher's thread) once this run's next batch has
        been published, or at once if the writer takes no more events."""
        with self._lock:
            if not (self.closed or self.fenced):
                self._publish_waiters.append(callback)
                return
        callback()

    def published(self) -> None:
        """The publisher sent a batch of this run (or gave up on it): wake the waiters."""
        with self._lock:
            waiters, self._publish_waiters = self._publish_waiters, []
        for callback in waiters:
            callback()

    def mark_cancelled(self) -> None:
        self.cancel_requested = True
        self._notify_stop()

    def mark_fenced(self) -> None:
        self.fenced = True
        self._notify_stop()
        self.published()  # nothing of this run will be published any more

    def _notify_stop(self) -> None:
        callback = self._on_stop
        if callback is not None:
            with contextlib.suppress(RuntimeError):  # the run's loop has already closed
                callback()

    @property
    def has_buffered_tokens(self) -> bool:
        return any(buffer.parts for buffer in list(self._tokens.values()))

    # --- called by the sink ---------------------------------------------------------------

    @property
    def has_lazy_events(self) -> bool:
        return self._lazy_since is not None

    def take(self, now: float, window: float) -> tuple[list[PendingEvent], Final | None]:
        with self._lock:
            self._drain_tokens(now - window)
            if (
                not self._due
                and self._final is None
                and self._lazy_since is not None
                and now - self._lazy_since < window
            ):
                return [], None  # only young lifecycle events: they ride with what follows
            events, self._pending = self._pending, []
            final, self._final = self._final, None
            self._due, self._lazy_since = False, None
            return events, final

    def _drain_tokens(self, flushed_before: float | None) -> None:
        """Turn buffered tokens into events: all of them, or those of nodes whose last
        flush is older than `flushed_before` (the coalescing window)."""
        now = time.monotonic()
        for node_id, buffer in self._tokens.items():
            if buffer.parts and (flushed_before is None or buffer.last_flush <= flushed_before):
                payload: dict[str, Any] = {"data": "".join(buffer.parts)}
                if buffer.item is not None:
                    payload["item"] = buffer.item
                self._append("on_token", node_id, payload)
                buffer.parts = []
                buffer.last_flush = now
                self._due = True

    def _append(self, event: str, node_id: str, payload: dict[str, Any]) -> None:
        self._pending.append(PendingEvent(self.next_seq, event, node_id, payload, timezone.now()))
        self.next_seq += 1
