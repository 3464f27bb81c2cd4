"""Writing usage: a finished run's reported token counts into the ledger and the day's
roll-up, in one transaction, exactly once per run and node; and the budgets a workspace's
admins set for the workspace and for its API keys (audited)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import ApiToken, Membership, Role, Workspace
from accounts.tenancy import require_role, scoped
from audit.services import record
from runs.models import Run
from runs.selectors import run_usage
from usage.models import KeyBudget, ModelPrice, UsageDay, UsageRecord, WorkspaceBudget

UPSERT_DAY_SQL = """
INSERT INTO {table} (day, workspace_id, flow_id, user_id, api_token_id, model,
                     input_tokens, output_tokens, cost, calls)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT ON CONSTRAINT usageday_key DO UPDATE SET
    input_tokens = {table}.input_tokens + EXCLUDED.input_tokens,
    output_tokens = {table}.output_tokens + EXCLUDED.output_tokens,
    cost = {table}.cost + EXCLUDED.cost,
    calls = {table}.calls + EXCLUDED.calls
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
    records: list[UsageRecord] = []
    # One roll-up increment per model (a run's day, flow, user and key are the same for all
    # its nodes): an iteration's thousand calls are one upsert, not a thousand.
    per_model: dict[str, list[Any]] = {}
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
        records.append(
            UsageRecord(
                run=run,
                node_id=node_id,
                workspace_id=run.workspace_id,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=cost,
                currency=price.currency if price is not None else "",
            )
        )
        total = per_model.setdefault(model, [0, 0, Decimal(0), 0])
        total[0] += input_tokens
        total[1] += output_tokens
        total[2] += cost or Decimal(0)
        total[3] += 1
    UsageRecord.objects.bulk_create(records, batch_size=500)
    for model, (input_tokens, output_tokens, cost, calls) in per_model.items():
        _add_to_day(
            day=day,
            run=run,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
            calls=calls,
        )
    return len(records)


def _add_to_day(
    *,
    day: Any,
    run: Run,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cost: Decimal,
    calls: int = 1,
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
        calls,
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
        calls=F("calls") + calls,
    )


# --- budgets --------------------------------------------------------------------------------
# Sane ceilings: far above any real month (a trillion tokens; a billion in cost), well inside
# the columns (a 64-bit integer; 14 digits, 4 after the point), so a typo with extra zeros
# is refused rather than silently meaning "no limit".
MAX_MONTHLY_TOKENS = 10**12
MAX_MONTHLY_COST = Decimal(1_000_000_000)
COST_PLACES = 4


@dataclass(frozen=True)
class BudgetLimits:
    """A monthly budget's two limits; None: no limit of that kind."""

    monthly_tokens: int | None
    monthly_cost: Decimal | None

    @property
    def empty(self) -> bool:
        return self.monthly_tokens is None and self.monthly_cost is None

    def as_audit(self) -> dict[str, str | int | None]:
        """As the trail keeps it: the cost as a string without trailing zeros (2.5000 as
        the database gives it back and 2.5 as it was typed are the same limit)."""
        cost = self.monthly_cost
        return {
            "monthly_tokens": self.monthly_tokens,
            "monthly_cost": None if cost is None else format(cost.normalize(), "f"),
        }


def budget_limits(*, monthly_tokens: int | None, monthly_cost: Decimal | None) -> BudgetLimits:
    """The limits if they can be a budget, else ValidationError naming each bad one (codes:
    `not_a_number`, `negative`, `too_large`, `too_precise`). 0 is allowed: it refuses
    every run (a stop switch)."""
    errors: dict[str, ValidationError] = {}
    if monthly_tokens is not None:
        if isinstance(monthly_tokens, bool) or not isinstance(monthly_tokens, int):
            errors["monthly_tokens"] = ValidationError(
                "The token budget is a whole number.", code="not_a_number"
            )
        elif error := _out_of_range(monthly_tokens, MAX_MONTHLY_TOKENS, "token budget"):
            errors["monthly_tokens"] = error
    if monthly_cost is not None:
        if not isinstance(monthly_cost, Decimal) or not monthly_cost.is_finite():
            errors["monthly_cost"] = ValidationError(
                "The cost budget is a number.", code="not_a_number"
            )
        elif error := _out_of_range(monthly_cost, MAX_MONTHLY_COST, "cost budget"):
            errors["monthly_cost"] = error
        elif monthly_cost != monthly_cost.quantize(Decimal(1).scaleb(-COST_PLACES)):
            errors["monthly_cost"] = ValidationError(
                f"The cost budget has at most {COST_PLACES} decimal places.", code="too_precise"
            )
    if errors:
        raise ValidationError(errors)
    return BudgetLimits(monthly_tokens, monthly_cost)


def _out_of_range(
    value: int | Decimal, maximum: int | Decimal, name: str
) -> ValidationError | None:
    if value < 0:
        return ValidationError(f"The {name} cannot be negative.", code="negative")
    if value > maximum:
        return ValidationError(f"The {name} is at most {maximum:,} a month.", code="too_large")
    return None


Budget = TypeVar("Budget", WorkspaceBudget, KeyBudget)


def _limits_of(budget: WorkspaceBudget | KeyBudget | None) -> BudgetLimits:
    if budget is None:
        return BudgetLimits(None, None)
    return BudgetLimits(budget.monthly_tokens, budget.monthly_cost)


def _apply(budget: Budget | None, new: BudgetLimits, make: Callable[[], Budget]) -> Budget | None:
    """Write `new` over the locked `budget` row: removed when both limits are empty (no
    budget is no row, as in the admin), created by `make()` when there was none."""
    if new.empty:
        if budget is not None:
            budget.delete()
        return None
    if budget is None:
        budget = make()
    budget.monthly_tokens, budget.monthly_cost = new.monthly_tokens, new.monthly_cost
    budget.full_clean()
    budget.save()
    return budget


@transaction.atomic
def workspace_budget_set(
    *,
    workspace: Workspace,
    acting: Membership,
    monthly_tokens: int | None,
    monthly_cost: Decimal | None,
) -> WorkspaceBudget | None:
    """Set, change or remove (both None) the workspace's monthly budget; admins and owners
    only. Audited as `usage.budget_set` with what changed; setting what is already set
    changes nothing and records nothing. Runs started from now on are held to it."""
    require_role(acting, Role.ADMIN)
    new = budget_limits(monthly_tokens=monthly_tokens, monthly_cost=monthly_cost)
    budget = WorkspaceBudget.objects.select_for_update().filter(workspace=workspace).first()
    old = _limits_of(budget)
    if old == new:
        return budget
    saved = _apply(budget, new, lambda: WorkspaceBudget(workspace=workspace))
    record(
        action="usage.budget_set",
        workspace=workspace,
        actor=acting.user,
        target=f"workspace:{workspace.slug}",
        before=old.as_audit(),
        after=new.as_audit(),
    )
    return saved


@transaction.atomic
def key_budget_set(
    *,
    workspace: Workspace,
    acting: Membership,
    api_token: ApiToken,
    monthly_tokens: int | None,
    monthly_cost: Decimal | None,
) -> KeyBudget | None:
    """Set, change or remove (both None) an API key's own monthly budget; admins and owners
    only, for any key of the workspace (the caller found it with `get_scoped`). Audited as
    `usage.key_budget_set`. The workspace's budget still applies to the key's runs."""
    require_role(acting, Role.ADMIN)
    token = scoped(ApiToken, workspace).get(pk=api_token.pk)
    new = budget_limits(monthly_tokens=monthly_tokens, monthly_cost=monthly_cost)
    budget = KeyBudget.objects.select_for_update().filter(api_token=token).first()
    old = _limits_of(budget)
    if old == new:
        return budget
    saved = _apply(budget, new, lambda: KeyBudget(api_token=token))
    key = {"name": token.name, "prefix": token.prefix}  # which key, for a reader of the trail
    record(
        action="usage.key_budget_set",
        workspace=workspace,
        actor=acting.user,
        target=f"token:{token.pk}",
        before={**old.as_audit(), **key},
        after={**new.as_audit(), **key},
    )
    return saved
