"""`persist_batch`: one batch of several runs' events in one database write.

A batch is, per run, the events the sink took from its writer and, for a run that ends,
its final row. Every write re-checks each run's fencing token (`lease_token`) in the same
transaction: a writer whose lease was taken (reaped, or a stale duplicate task) writes
nothing, and `persist_batch` returns it so the sink can fence it off.

Two named strategies with the same effect; the sink picks one for its database, once
(`strategy_for_vendor`), and `strategy_for_batch` falls back explicitly when a batch
does not fit the first:

- `SINGLE_STATEMENT` (PostgreSQL): one data-modifying CTE, so one round trip. In a busy
  worker every round trip costs the sink a wait for the GIL behind the run loop: the ORM
  transaction took 50-70 ms per batch under load, the statement a few ms.
- `PORTABLE` (any database, any batch size): one ORM transaction.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, PositiveIntegerField, Q, Value, When
from django.utils import timezone

from config.jsontext import storable_json
from runs.engine.writer import Final, PendingEvent, RunWriter
from runs.models import Run, RunEvent

Batch = list[tuple[RunWriter, list[PendingEvent], Final | None]]

MAX_STATEMENT_EVENTS = 5_000  # 7 parameters each, well under PostgreSQL's 65,535


class PersistStrategy(enum.Enum):
    SINGLE_STATEMENT = "single statement"
    PORTABLE = "portable"


def strategy_for_vendor(vendor: str) -> PersistStrategy:
    """The strategy a sink uses on this database."""
    return PersistStrategy.SINGLE_STATEMENT if vendor == "postgresql" else PersistStrategy.PORTABLE


def strategy_for_batch(preferred: PersistStrategy, batch: Batch) -> PersistStrategy:
    """`preferred`, unless the batch does not fit one statement (no events, or more than
    MAX_STATEMENT_EVENTS): then PORTABLE, which takes any batch."""
    if preferred is PersistStrategy.SINGLE_STATEMENT:
        count = sum(len(events) for _w, events, _final in batch)
        if not 0 < count <= MAX_STATEMENT_EVENTS:
            return PersistStrategy.PORTABLE
    return preferred


def persist_batch(batch: Batch, *, strategy: PersistStrategy) -> set[str]:
    """Write `batch` by `strategy`: the events, the runs' `last_seq`, their leases
    extended (or their final rows). Returns the run ids whose lease is no longer held by
    their writer: nothing of those was written. DatabaseError: nothing was written."""
    lease_until = timezone.now() + timedelta(seconds=settings.FLOWDECK["RUN_LEASE_SECONDS"])
    if strategy is PersistStrategy.SINGLE_STATEMENT:
        return _persist_statement(batch, lease_until)
    return _persist_transaction(batch, lease_until)


def held_by(writers: list[RunWriter]) -> Q:
    """Rows of these runs whose lease is still held by these writers (fencing tokens)."""
    held = Q()
    for writer in writers:
        held |= Q(pk=writer.run_id, lease_token=writer.lease_token)
    return held


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


def _persist_statement(batch: Batch, lease_until: datetime) -> set[str]:
    """PostgreSQL: one statement (so one implicit transaction) that extends the leases
    still held (fencing token in the UPDATE's WHERE), finalises the runs that finish, and
    inserts the events of exactly those runs; it returns the runs it wrote."""
    run_rows: list[str] = []
    run_params: list[Any] = []
    event_rows: list[str] = []
    event_params: list[Any] = []
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
                storable_json(final["outputs"]),
                final["error"],
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
                storable_json(e.payload),
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
    return {writer.run_id for writer, _events, _final in batch} - held


def _persist_transaction(batch: Batch, lease_until: datetime) -> set[str]:
    """Any database, any batch: one transaction with one UPDATE for every live run
    (fencing token checked in its WHERE), one for each finishing run, one INSERT."""
    live = [(w, events) for w, events, final in batch if final is None]
    finishing = [(w, events, final) for w, events, final in batch if final is not None]
    lost: set[str] = set()
    with transaction.atomic():
        if live:
            held = held_by([w for w, _events in live])
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
                lost |= {w.run_id for w, _events in live if w.run_id not in still_held}
        for writer, events, final in finishing:
            fields = {**final, "lease_expires_at": None}
            if events:
                fields["last_seq"] = events[-1].seq
            runs = Run.objects.filter(pk=writer.run_id, lease_token=writer.lease_token)
            if not runs.update(**fields):
                lost.add(writer.run_id)
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
            if writer.run_id not in lost
            for e in events
        ]
        RunEvent.objects.bulk_create(rows, batch_size=500)
    return lost
