"""The event sink: numbers events, coalesces tokens, persists, then publishes.

One `EventSink` per worker process serves every run the process holds. Executors call
`RunWriter.emit` (cheap, thread-safe, never touches the database); a single writer thread
wakes when there is something to write, takes what is pending across all runs, writes it
in one transaction (on PostgreSQL one statement: one round trip) and only then hands it to
the publisher, an event loop of its own that sends each run's events to its session
group, batch after batch in commit order. So:

- seq is assigned in memory by the run's only writer (the lease holder), 1..N, no gaps;
- tokens of a node are coalesced for `TOKEN_FLUSH_SECONDS` into one `on_token` event, so a
  fast model is not one row and one frame per token;
- every write re-checks the run's fencing token (`lease_token`) in the same transaction:
  a writer whose lease was taken (reaped, or a stale duplicate task) is fenced off and
  its executor stops at its next cancellation check;
- a client never sees an event that is not committed (guarantee 1: persist, then publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Case, PositiveIntegerField, Q, Value, When
from django.utils import timezone

from runs.events import clean_text, session_group
from runs.models import Run, RunEvent
from runs.runloop import RunLoop

log = logging.getLogger(__name__)

TICK_SECONDS = 0.005
HEARTBEAT_SECONDS = 1.0
MAX_STATEMENT_EVENTS = 5_000  # 7 parameters each, well under PostgreSQL's 65,535
# Lifecycle events do not wake the sink: they wait up to one coalescing window for what
# follows (typically the node's first token), so a run's start is one write and one
# publish instead of three, while its first token is on the critical path.
LAZY_EVENTS = frozenset({"run_started", "node_started", "node_finished"})

PERSIST_SQL = """
WITH batch (id, token, seq, status, outputs, error, finished_at) AS (VALUES {runs}),
held AS (
    UPDATE {run} AS r SET
        last_seq = batch.seq,
        lease_expires_at = CASE WHEN batch.status IS NULL THEN %s::timestamptz END,
        status = COALESCE(batch.status, r.status),
        outputs = COALESCE(batch.outputs, r.outputs),
        error = COALESCE(batch.error, r.error),
        finished_at = COALESCE(batch.finished_at, r.finished_at)
    FROM batch WHERE r.id = batch.id AND r.lease_token = batch.token
    RETURNING r.id
),
written AS (
    INSERT INTO {event} (workspace_id, run_id, seq, event, node_id, payload, ts)
    SELECT e.workspace_id, e.run_id, e.seq, e.event, e.node_id, e.payload, e.ts
    FROM (VALUES {events}) AS e (workspace_id, run_id, seq, event, node_id, payload, ts)
    WHERE e.run_id IN (SELECT id FROM held)
)
SELECT id FROM held
"""


@dataclass
class PendingEvent:
    seq: int
    event: str
    node_id: str
    payload: dict[str, Any]
    ts: datetime

    def as_message(self, run_id: str) -> dict[str, Any]:
        return {
            "event": self.event,
            "run_id": run_id,
            "seq": self.seq,
            "node_id": self.node_id or None,
            "ts": self.ts.isoformat(),
            **self.payload,
        }


@dataclass
class _TokenBuffer:
    parts: list[str] = field(default_factory=list)
    last_flush: float = 0.0  # when this node's tokens were last turned into an event


class RunWriter:
    """The in-memory head of one run's event log, owned by the lease holder."""

    def __init__(
        self,
        sink: EventSink,
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
        self._final: dict[str, Any] | None = None
        self._due = False  # pending events that must go out at the sink's next pass
        self._lazy_since: float | None = None  # oldest pending lifecycle event, if any
        self.closed = False
        self.fenced = False
        self.cancel_requested = False
        self._on_stop: Callable[[], None] | None = None
        self._publish_waiters: list[Callable[[], None]] = []
        self.done = threading.Event()

    # --- called by the executor (any thread) --------------------------------------------

    def emit(self, event: str, node_id: str = "", payload: dict[str, Any] | None = None) -> None:
        if event == "on_token":
            self._add_token(node_id, str((payload or {}).get("data") or ""))
            return
        with self._lock:
            if self.closed:
                return
            # Anything else first flushes buffered tokens, so the log stays chronological.
            lazy = event in LAZY_EVENTS and not self.has_buffered_tokens
            self._drain_tokens(None)
            self._append(event, node_id, payload or {})
            if not lazy:
                self._due = True
            elif self._lazy_since is None:
                self._lazy_since = time.monotonic()
        if not lazy:
            self.sink.wake()

    def _add_token(self, node_id: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self.closed:
                return
            buffer = self._tokens.get(node_id)
            if buffer is None:
                buffer = self._tokens[node_id] = _TokenBuffer()
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
        with self._lock:
            if self.closed:
                return
            self._drain_tokens(None)
            self._append("completed", "", {"status": completed_status})
            self._final = {
                "status": status,
                "outputs": outputs,
                "error": error,
                "finished_at": timezone.now(),
            }
            self.closed = True
        self.sink.wake()

    @property
    def should_stop(self) -> bool:
        return self.cancel_requested or self.fenced

    def on_stop(self, callback: Callable[[], None]) -> None:
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

    # --- called by the sink thread ------------------------------------------------------

    @property
    def has_lazy_events(self) -> bool:
        return self._lazy_since is not None

    def take(self, now: float, window: float) -> tuple[list[PendingEvent], dict | None]:
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
                self._append("on_token", node_id, {"data": "".join(buffer.parts)})
                buffer.parts = []
                buffer.last_flush = now
                self._due = True

    def _append(self, event: str, node_id: str, payload: dict[str, Any]) -> None:
        self._pending.append(PendingEvent(self.next_seq, event, node_id, payload, timezone.now()))
        self.next_seq += 1


class EventSink:
    """The per-process writer thread shared by every run the process executes."""

    def __init__(self) -> None:
        self._writers: dict[str, RunWriter] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._publisher = Publisher()
        self._last_heartbeat = 0.0
        self.window = settings.FLOWDECK["TOKEN_FLUSH_SECONDS"]

    def open(self, run: Run) -> RunWriter:
        writer = RunWriter(
            self,
            run_id=str(run.pk),
            workspace_id=run.workspace_id,
            session_id=run.session_id,
            lease_token=run.lease_token,
            last_seq=run.last_seq,
        )
        with self._lock:
            self._writers[writer.run_id] = writer
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="event-sink", daemon=True)
                self._thread.start()
        return writer

    def wake(self) -> None:
        self._wake.set()

    # --- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        window = self.window
        timeout = HEARTBEAT_SECONDS
        while True:
            # Sleep until an event arrives (emit wakes us), buffered tokens are due, or the
            # next heartbeat: no busy ticking while runs wait on their models.
            self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                writers = list(self._writers.values())
            if not writers:
                timeout = HEARTBEAT_SECONDS
                continue
            now = time.monotonic()
            batch = []
            for writer in writers:
                events, final = writer.take(now, window)
                if events or final:
                    batch.append((writer, events, final))
            try:
                if batch and self._write(batch):
                    self._publisher.submit([(w, events) for w, events, _final in batch if events])
                if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
                    self._last_heartbeat = now
                    self._heartbeat(writers)
            except Exception:
                log.exception("event sink iteration failed")
                connection.close()
            for writer, _events, final in batch:
                if final is not None or writer.fenced:
                    self._release(writer)
            with self._lock:
                idle = not self._writers
            if idle:
                connection.close()  # an idle worker holds no database connection
            next_beat = max(0.0, HEARTBEAT_SECONDS - (time.monotonic() - self._last_heartbeat))
            buffered = any(w.has_buffered_tokens or w.has_lazy_events for w in writers)
            timeout = max(TICK_SECONDS, min(window if buffered else next_beat, next_beat))

    def _release(self, writer: RunWriter) -> None:
        with self._lock:
            self._writers.pop(writer.run_id, None)
        writer.closed = True
        writer.done.set()

    def _write(self, batch: list[tuple[RunWriter, list[PendingEvent], dict | None]]) -> bool:
        """Persist a batch, retrying once on a fresh connection (a dropped connection, a
        restarted server). If it still fails, its runs are fenced off: nothing of the batch
        was written, so their logs end at the last committed seq, their executors stop,
        and the reaper ends them `failed` once their leases lapse, with the final event
        numbered right after what was committed. A log never has a hole."""
        for attempt in (1, 2):
            try:
                self._persist(batch)
                return True
            except DatabaseError:
                log.warning("event sink write failed (attempt %d)", attempt, exc_info=True)
                connection.close()
        for writer, events, _final in batch:
            self._fence(writer, events)
        return False

    def _persist(self, batch: list[tuple[RunWriter, list[PendingEvent], dict | None]]) -> None:
        """Write a batch. Few round trips matter: in a busy worker each one costs the sink
        a wait for the GIL behind the run loop, so on PostgreSQL a batch is one statement."""
        lease_until = timezone.now() + timedelta(seconds=settings.FLOWDECK["RUN_LEASE_SECONDS"])
        count = sum(len(events) for _w, events, _final in batch)
        if connection.vendor == "postgresql" and 0 < count <= MAX_STATEMENT_EVENTS:
            self._persist_statement(batch, lease_until)
        else:
            self._persist_transaction(batch, lease_until)
        for writer, events, _final in batch:
            if events:
                writer.persisted_seq = events[-1].seq

    def _persist_statement(
        self, batch: list[tuple[RunWriter, list[PendingEvent], dict | None]], lease_until: datetime
    ) -> None:
        """PostgreSQL: one statement (so one implicit transaction) that extends the leases
        still held (fencing token in the UPDATE's WHERE), finalises the runs that finish,
        and inserts the events of exactly those runs; it returns the runs it wrote, and
        the others are fenced off."""
        run_rows, run_params = [], []
        event_rows, event_params = [], []
        for writer, events, final in batch:
            run_rows.append(
                "(%s::uuid, %s::integer, %s::integer, %s::varchar, %s::jsonb, %s::text,"
                " %s::timestamptz)"
            )
            run_params += [
                writer.run_id,
                writer.lease_token,
                events[-1].seq if events else writer.persisted_seq,
            ]
            if final is None:
                run_params += [None, None, None, None]
            else:
                run_params += [
                    final["status"],
                    json.dumps(final["outputs"]),
                    clean_text(final["error"]),
                    final["finished_at"],
                ]
            for e in events:
                event_rows.append("(%s::bigint, %s::uuid, %s::integer, %s, %s, %s::jsonb, %s)")
                event_params += [
                    writer.workspace_id,
                    writer.run_id,
                    e.seq,
                    e.event,
                    e.node_id,
                    json.dumps(e.payload),
                    e.ts,
                ]
        sql = PERSIST_SQL.format(
            run=Run._meta.db_table,
            event=RunEvent._meta.db_table,
            runs=", ".join(run_rows),
            events=", ".join(event_rows),
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [*run_params, lease_until, *event_params])
            held = {str(row[0]) for row in cursor.fetchall()}
        for writer, events, _final in batch:
            if writer.run_id not in held:
                self._fence(writer, events)

    def _persist_transaction(
        self, batch: list[tuple[RunWriter, list[PendingEvent], dict | None]], lease_until: datetime
    ) -> None:
        """Any database, any batch: one transaction with one UPDATE for every live run
        (fencing token checked in its WHERE), one for each finishing run, one INSERT."""
        live = [(w, events) for w, events, final in batch if final is None]
        finishing = [(w, events, final) for w, events, final in batch if final is not None]
        with transaction.atomic():
            if live:
                held = _held_by([w for w, _events in live])
                seqs = [
                    When(pk=w.run_id, then=Value(events[-1].seq if events else w.persisted_seq))
                    for w, events in live
                ]
                updated = Run.objects.filter(held).update(
                    last_seq=Case(*seqs, output_field=PositiveIntegerField()),
                    lease_expires_at=lease_until,
                )
                if updated != len(live):
                    still_held = {
                        str(pk) for pk in Run.objects.filter(held).values_list("pk", flat=True)
                    }
                    for writer, events in live:
                        if writer.run_id not in still_held:
                            self._fence(writer, events)
            for writer, events, final in finishing:
                fields = {**final, "lease_expires_at": None}
                if events:
                    fields["last_seq"] = events[-1].seq
                runs = Run.objects.filter(pk=writer.run_id, lease_token=writer.lease_token)
                if not runs.update(**fields):
                    self._fence(writer, events)
            rows = [
                RunEvent(
                    workspace_id=writer.workspace_id,
                    run_id=writer.run_id,
                    seq=e.seq,
                    event=e.event,
                    node_id=e.node_id,
                    payload=e.payload,
                    ts=e.ts,
                )
                for writer, events, _final in batch
                for e in events
            ]
            RunEvent.objects.bulk_create(rows, batch_size=500)

    @staticmethod
    def _fence(writer: RunWriter, events: list[PendingEvent]) -> None:
        """Someone took the lease (the reaper, or we are a stale duplicate): drop and stop."""
        log.warning("run %s fenced off; dropping %d events", writer.run_id, len(events))
        writer.mark_fenced()
        events.clear()

    def _heartbeat(self, writers: list[RunWriter]) -> None:
        """Extend every live lease (one UPDATE), notice lost leases and cancel requests."""
        close_old_connections()  # here, not per batch: it costs a health-check round trip
        live = [w for w in writers if not w.closed]
        if not live:
            return
        lease = timezone.now() + timedelta(seconds=settings.FLOWDECK["RUN_LEASE_SECONDS"])
        held = _held_by(live)
        with transaction.atomic():
            Run.objects.filter(held).update(lease_expires_at=lease)
            rows = dict(Run.objects.filter(held).values_list("pk", "cancel_requested"))
        flags = {str(pk): cancel for pk, cancel in rows.items()}
        for writer in live:
            if writer.run_id not in flags:
                writer.mark_fenced()
                self._release(writer)
            elif flags[writer.run_id]:
                writer.mark_cancelled()


class Publisher:
    """Sends committed batches to the channel layer, from an event loop of its own.

    The sink thread only hands a batch over (it never waits on Redis, so the next write
    starts at once). Batches go out in the order they were committed; when several are
    waiting, each run's events are merged into one layer message. Not on the run loop:
    while dozens of runs start at once that loop is crowded, and events waited there
    50-100 ms before going out. Publishing is best effort: the log has the events, and
    watchers fill any gap from it.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[list[tuple[RunWriter, list[PendingEvent]]]] | None = None
        self._thread: RunLoop | None = None

    def _loop(self) -> RunLoop:
        if self._thread is None or not self._thread.alive:
            self._thread = RunLoop(name="publisher")
            self._queue = None
        return self._thread

    def submit(self, sends: list[tuple[RunWriter, list[PendingEvent]]]) -> None:
        if sends:
            self._loop().call_soon(self._put, sends)

    def _put(self, sends: list[tuple[RunWriter, list[PendingEvent]]]) -> None:  # on the loop
        if self._queue is None:
            self._queue = asyncio.Queue()
            asyncio.ensure_future(self._drain())
        self._queue.put_nowait(sends)

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            merged: dict[RunWriter, list[dict[str, Any]]] = {}
            sends = await self._queue.get()
            while True:
                for writer, events in sends:
                    merged.setdefault(writer, []).extend(
                        event.as_message(writer.run_id) for event in events
                    )
                if self._queue.empty():
                    break
                sends = self._queue.get_nowait()
            try:
                await self._send(merged)
            except Exception as exc:  # Redis away: watchers catch up from the log
                log.warning("publishing run events failed: %r", exc)
            finally:
                for writer in merged:
                    writer.published()

    @staticmethod
    async def _send(merged: dict[RunWriter, list[dict[str, Any]]]) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        sends = [
            (writer.group, {"type": "run.events", "events": messages})
            for writer, messages in merged.items()
        ]
        if hasattr(layer, "group_send_many"):  # config.layers: one round trip
            await layer.group_send_many(sends)
        else:
            await asyncio.gather(*(layer.group_send(g, m) for g, m in sends))


def _held_by(writers: list[RunWriter]) -> Q:
    """Rows of these runs whose lease is still held by these writers (fencing tokens)."""
    held = Q()
    for writer in writers:
        held |= Q(pk=writer.run_id, lease_token=writer.lease_token)
    return held


_sink: EventSink | None = None
_sink_lock = threading.Lock()


def get_sink() -> EventSink:
    global _sink
    with _sink_lock:
        if _sink is None:
            _sink = EventSink()
        return _sink
