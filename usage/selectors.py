"""Reading usage: a workspace's spend this month, what its budget leaves, and the
totals the usage page shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Max, Sum
from django.utils import timezone

from accounts.models import Workspace
from usage.models import KeyBudget, ModelPrice, UsageDay, WorkspaceBudget


@dataclass(frozen=True)
class Spend:
    tokens: int
    cost: Decimal


def month_start(today: date | None = None) -> date:
    return (today or timezone.now().date()).replace(day=1)


def spend_this_month(workspace_id: int, api_token_id: int | None = None) -> Spend:
    """The month's spend of the workspace, or of one of its API keys."""
    days = UsageDay.objects.filter(workspace_id=workspace_id, day__gte=month_start())
    if api_token_id is not None:
        days = days.filter(api_token_id=api_token_id)
    totals = days.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost"))
    return Spend(tokens=(totals["i"] or 0) + (totals["o"] or 0), cost=totals["c"] or Decimal(0))


def _left(limit_tokens: int | None, limit_cost: Decimal | None, spent: Spend) -> int | None:
    """What one budget leaves, in tokens. A cost budget becomes tokens at the dearest
    price in the table (so a run stops no later than the money runs out); with no prices,
    a cost budget only stops runs once spent."""
    left: list[int] = []
    if limit_tokens is not None:
        left.append(limit_tokens - spent.tokens)
    if limit_cost is not None:
        money = limit_cost - spent.cost
        if money <= 0:
            left.append(0)
        else:
            prices = ModelPrice.objects.aggregate(
                i=Max("input_per_million"), o=Max("output_per_million")
            )
            dearest = max(prices["i"] or Decimal(0), prices["o"] or Decimal(0))
            if dearest > 0:
                left.append(int(money * 1_000_000 / dearest))
    return max(min(left), 0) if left else None


def tokens_left(workspace_id: int, api_token_id: int | None = None) -> int | None:
    """What the workspace's budget, and the API key's when a key started the run, leave
    this month, in tokens (the fewer; None: no budget)."""
    left: list[int] = []
    budget = WorkspaceBudget.objects.filter(workspace_id=workspace_id).first()
    if budget is not None:
        n = _left(budget.monthly_tokens, budget.monthly_cost, spend_this_month(workspace_id))
        if n is not None:
            left.append(n)
    if api_token_id is not None:
        key = KeyBudget.objects.filter(
            api_token_id=api_token_id, api_token__workspace_id=workspace_id
        ).first()
        if key is not None:
            spent = spend_this_month(workspace_id, api_token_id)
            n = _left(key.monthly_tokens, key.monthly_cost, spent)
            if n is not None:
                left.append(n)
    return min(left) if left else None


def daily_totals(workspace: Workspace, days: int = 30) -> list[dict[str, Any]]:
    """One entry per day of the last `days` (UTC), oldest first, days without use as 0."""
    today = timezone.now().date()
    first = today - timedelta(days=days - 1)
    rows = (
        UsageDay.objects.filter(workspace=workspace, day__gte=first)
        .values("day")
        .annotate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost"))
    )
    by_day: dict[date, dict[str, Any]] = {r["day"]: dict(r) for r in rows}
    result = []
    for n in range(days):
        day = first + timedelta(days=n)
        row = by_day.get(day, {})
        result.append(
            {
                "day": day,
                "input_tokens": row.get("i") or 0,
                "output_tokens": row.get("o") or 0,
                "cost": row.get("c") or Decimal(0),
            }
        )
    return result


# The chart's drawing box (SVG user units; the SVG scales to its container's width).
CHART_WIDTH, CHART_HEIGHT = 600, 160


def chart_bars(days: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each day's bar (x, y, width, height in the chart's box), scaled to the busiest day."""
    most = max((d["input_tokens"] + d["output_tokens"] for d in days), default=0) or 1
    step = CHART_WIDTH / max(len(days), 1)
    bars = []
    for n, d in enumerate(days):
        total = d["input_tokens"] + d["output_tokens"]
        height = round(total * (CHART_HEIGHT - 10) / most, 1)
        bars.append(
            {
                **d,
                "total": total,
                "x": round(n * step + 1, 1),
                "width": round(max(step - 2, 1), 1),
                "y": round(CHART_HEIGHT - height, 1),
                "height": height,
            }
        )
    return bars


def breakdown(workspace: Workspace, by: str, days: int = 30) -> list[dict[str, Any]]:
    """The last `days`' totals per `by` ("flow__name", "user__email" or "model"),
    largest first."""
    first = timezone.now().date() - timedelta(days=days - 1)
    rows = (
        UsageDay.objects.filter(workspace=workspace, day__gte=first)
        .values(by)
        .annotate(
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
            calls=Sum("calls"),
        )
        .order_by("-output_tokens", by)
    )
    return [
        {"name": r[by], **{k: r[k] for k in ("input_tokens", "output_tokens", "cost", "calls")}}
        for r in rows
    ]


def budget_of(workspace: Workspace) -> WorkspaceBudget | None:
    return WorkspaceBudget.objects.filter(workspace=workspace).first()
