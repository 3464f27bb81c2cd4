"""The budget form: the same two limits for a workspace (Settings → Usage) and for an API
key (Settings → API tokens). It reads the text; `services.budget_limits` says what a
budget may be (also for the JSON API), so every door gives the same messages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from usage.models import KeyBudget, WorkspaceBudget
from usage.services import (
    COST_PLACES,
    MAX_MONTHLY_COST,
    MAX_MONTHLY_TOKENS,
    BudgetLimits,
    budget_limits,
)


class BudgetForm(forms.Form):
    monthly_tokens = forms.IntegerField(
        required=False,
        label="Tokens a month",
        help_text="Input plus output tokens. Empty: no limit; 0 refuses every run.",
        error_messages={"invalid": "The token budget is a whole number."},
        widget=forms.NumberInput(attrs={"min": 0, "max": MAX_MONTHLY_TOKENS, "step": 1}),
    )
    monthly_cost = forms.DecimalField(
        required=False,
        label="Cost a month",
        help_text="In the price table's currency. Empty: no limit.",
        error_messages={"invalid": "The cost budget is a number."},
        widget=forms.NumberInput(
            attrs={"min": 0, "max": MAX_MONTHLY_COST, "step": f"{10**-COST_PLACES:.{COST_PLACES}f}"}
        ),
    )

    limits: BudgetLimits

    @classmethod
    def for_budget(cls, budget: WorkspaceBudget | KeyBudget | None, **kwargs: Any) -> BudgetForm:
        """An unbound form showing `budget`'s limits (empty without one)."""
        initial: dict[str, Any] = {}
        if budget is not None:
            cost = budget.monthly_cost
            initial = {
                "monthly_tokens": budget.monthly_tokens,
                # 12.5 as typed, not the column's 12.5000 (and never 1E+2 for 100).
                "monthly_cost": None if cost is None else format(cost.normalize(), "f"),
            }
        return cls(initial=initial, **kwargs)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            self.limits = budget_limits(
                monthly_tokens=cleaned.get("monthly_tokens"),
                monthly_cost=cleaned.get("monthly_cost"),
            )
        except ValidationError as exc:
            for field, errors in exc.error_dict.items():
                for error in errors:
                    self.add_error(field, error)
        return cleaned
