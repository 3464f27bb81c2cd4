"""Writing usage: a finished run's reported token counts into the ledger and the day's
roll-up, in one transaction, exactly once per run and node."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from runs.models import Run
from runs.selectors import run_usage
from usage.models import ModelPrice, UsageDay, UsageRecord

UPSERT_DAY_SQL = """
INSERT INTO {table} (day, workspace_id, flow_id, user_id, api_token_id, model,
                     input_tokens, output_tokens, cost, calls)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 1)
ON CONFLICT ON CONSTRAINT usageday_key DO UPDATE SET
    input_tokens = {table}.input_tokens + EXCLUDED.input_tokens,
    output_tokens = {table}.output_tokens + EXCLUDED.output_tokens,
    cost = {table}.cost + EXCLUDED.cost,
    calls = {table}.calls + 1
"""


@transaction.atomic
def record_run_usage(*, run_id: str) -> int:
    """Record the usage a finished run's log reports; the number of new records. A node
    already recorded (a second delivery, a reaper) is skipped, so nothing counts twice.
    Cost is the model's price now (stored; none when the model has no price)."""
    run = Run.objects.select_for_update().filter(pk=run_id).first()
    if run is None:
        return 0
    recorded = set(UsageRecord.objects.filter(run=run).values_list("node_id", flat=True))
    prices = {p.model: p for p in ModelPrice.objects.all()}
    day = (run.finished_at or timezone.now()).date()
    new = 0
    for node_id, usage in run_usage(run).nodes.items():
        if node_id in recorded:
            continue
        model = usage["model"]
        input_tokens, output_tokens = usage["input_tokens"], usage["output_tokens"]
        price = prices.get(model)
        cost = (
            price.cost(input_tokens=input_tokens, output_tokens=output_tokens)
            if price is not None
            else None
        )
        UsageRecord.objects.create(
            run=run,
            node_id=node_id,
            workspace_id=run.workspace_id,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
            currency=price.currency if price is not None else "",
        )
        _add_to_day(
            day=day,
            run=run,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost or Decimal(0),
        )
        new += 1
    return new


def _add_to_day(
    *, day: Any, run: Run, model: str, input_tokens: int, output_tokens: int, cost: Decimal
) -> None:
    """Increment the day's row in the database (concurrent runs add, never overwrite)."""
    params = [
        day,
        run.workspace_id,
        run.flow_id,
        run.started_by_id,
        run.api_token_id,
        model,
        input_tokens,
        output_tokens,
        cost,
    ]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(UPSERT_DAY_SQL.format(table=UsageDay._meta.db_table), params)
        return
    # Other databases (SQLite in development): serialised writers, get-then-add is exact.
    row, _created = UsageDay.objects.get_or_create(
        day=day,
        workspace_id=run.workspace_id,
        flow_id=run.flow_id,
        user=run.started_by,
        api_token_id=run.api_token_id,
        model=model,
    )
    UsageDay.objects.filter(pk=row.pk).update(
        input_tokens=F("input_tokens") + input_tokens,
        output_tokens=F("output_tokens") + output_tokens,
        cost=F("cost") + cost,
        calls=F("calls") + 1,
    )
