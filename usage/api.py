"""Usage API: the workspace's monthly budget, read and set by its admins and owners (what
the workspace pays is their business, as on the usage page)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from accounts.api_auth import WorkspaceSlug, context, minimum_role
from accounts.models import Role
from usage import selectors, services

router = Router(tags=["usage"])


class BudgetIn(Schema):
    """The whole budget (PUT replaces it): a limit left out or null is no limit; both null
    removes the budget."""

    monthly_tokens: int | None = Field(
        None, description=f"Input plus output tokens a month, 0-{services.MAX_MONTHLY_TOKENS}."
    )
    monthly_cost: Decimal | None = Field(
        None,
        description=(
            f"Cost a month in the price table's currency, 0-{services.MAX_MONTHLY_COST}, at "
            f"most {services.COST_PLACES} decimal places (a number or a string)."
        ),
    )


class BudgetOut(Schema):
    """The budget (null limits: none) and what the workspace has spent this month (UTC)."""

    monthly_tokens: int | None
    monthly_cost: str | None = Field(..., description='A decimal string, e.g. "12.5".')
    spent_tokens: int
    spent_cost: str
    updated_at: datetime | None


class BudgetErrorOut(Schema):
    """400: a limit that cannot be a budget (`code` `invalid_budget`, a `message`, and
    `detail` field -> messages), or a body that is not JSON (`detail` only)."""

    code: str | None = None
    message: str | None = None
    detail: str | dict[str, list[str]]


def _decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _budget_out(request: HttpRequest) -> dict[str, Any]:
    workspace = context(request).workspace
    budget = selectors.budget_of(workspace)
    spent = selectors.spend_this_month(workspace.pk)
    return {
        "monthly_tokens": budget.monthly_tokens if budget else None,
        "monthly_cost": _decimal_text(budget.monthly_cost if budget else None),
        "spent_tokens": spent.tokens,
        "spent_cost": _decimal_text(spent.cost) or "0",
        "updated_at": budget.updated_at if budget else None,
    }


@router.get("usage/budget", response=BudgetOut, summary="The monthly budget and this month's spend")
@minimum_role(Role.ADMIN)
def budget_get(request: HttpRequest, slug: WorkspaceSlug) -> Any:
    return _budget_out(request)


@router.put(
    "usage/budget",
    response={200: BudgetOut, 400: BudgetErrorOut},
    summary="Set, change or remove the monthly budget (audited)",
)
@minimum_role(Role.ADMIN)
def budget_set(request: HttpRequest, slug: WorkspaceSlug, payload: BudgetIn) -> Any:
    try:
        services.workspace_budget_set(
            workspace=context(request).workspace,
            acting=context(request).membership,
            monthly_tokens=payload.monthly_tokens,
            monthly_cost=payload.monthly_cost,
        )
    except ValidationError as exc:
        detail = exc.message_dict
        return Status(
            400,
            {
                "code": "invalid_budget",
                "message": " ".join(m for messages in detail.values() for m in messages),
                "detail": detail,
            },
        )
    return _budget_out(request)
