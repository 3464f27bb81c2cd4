"""The event sink: the worker process's writer thread, shared by every run it executes.

Executors append to their runs' `RunWriter`s (runs.engine.writer); this thread wakes when
there is something to write, takes what is due across all runs, persists it as one batch
(runs.engine.persistence) and only then hands it to the publisher (runs.engine.publisher),
an event loop of its own that sends each run's events to its session group, batch after
batch in commit order. So a client never sees an event that is not committed (guarantee 1:
persist, then publish). Besides writing, the thread keeps the leases of its runs alive
(the heartbeat), notices cancel requests, and fences off a run whose lease was taken.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

from runs.engine.persistence import (
    Batch,
    PersistStrategy,
    held_by,
    persist_batch,
    strategy_for_batch,
    strategy_for_vendor,
)
from runs.engine.publisher import Publisher
from runs.engine.writer import PendingEvent, RunWriter
from runs.models import Run

log = logging.getLogger(__name__)

TICK_SECONDS = 0.005
HEARTBEAT_SECONDS = 1.0


class EventSink:
    """The per-process writer thread shared by every run the process executes.

    `strategy` is how batches are written; by default the one for the configured
    database (runs.engine.persistence.strategy_for_vendor), chosen once.
    """

    def __init__(self, strategy: PersistStrategy | None = None) -> None:
        self._writers: dict[str, RunWriter] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._publisher = Publisher()
        self._last_heartbeat = 0.0
        self.window = settings.FLOWDECK["TOKEN_FLUSH_SECONDS"]
        self.strategy = strategy or strategy_for_vendor(connection.vendor)

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
            batch: Batch = []
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

    def _write(self, batch: Batch) -> bool:
        """Persist a batch, retrying once on a fresh connection (a dropped connection, a
        restarted server). If it still fails, its runs are fenced off: nothing of the batch
        was written, so their logs end at the last committed seq, their executors stop,
        and the reaper ends them `failed` once their leases lapse, with the final event
        numbered right after what was committed. A log never has a hole."""
        strategy = strategy_for_batch(self.strategy, batch)
        for attempt in (1, 2):
            try:
                lost = persist_batch(batch, strategy=strategy)
                break
            except DatabaseError:
                log.warning("event sink write failed (attempt %d)", attempt, exc_info=True)
                connection.close()
        else:
            for writer, events, _final in batch:
                self._fence(writer, events)
            return False
        for writer, events, _final in batch:
            if writer.run_id in lost:
                self._fence(writer, events)
            elif events:
                writer.persisted_seq = events[-1].seq
        return True

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
        held = held_by(live)
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


_sink: EventSink | None = None
_sink_lock = threading.Lock()


def get_sink() -> EventSink:
    """This process's sink (started with its first run)."""
    global _sink
    with _sink_lock:
        if _sink is None:
            _sink = EventSink()
        return _sink
