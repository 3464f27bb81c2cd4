"""The workspace's usage page (Settings): tokens per day over 30 days, per flow, member
and model, and the month's spend against the budget. Every member sees tokens; cost and
the cost budget are for admins and owners (what the workspace pays is their business),
who also set the workspace's budget here and an API key's from the API tokens page."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from accounts.models import ApiToken, Role
from accounts.tenancy import WorkspaceMixin, get_scoped
from usage import selectors, services
from usage.forms import BudgetForm


def _saved_message(budget: Any) -> str:
    return "Budget saved." if budget is not None else "Budget removed: no monthly limit."


class UsageView(WorkspaceMixin, View):
    role_map = {"GET": Role.VIEWER, "POST": Role.ADMIN}

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        return self.render_page(request, form=None)

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        form = BudgetForm(request.POST)
        if not form.is_valid():
            return self.render_page(request, form=form, status=400)
        budget = services.workspace_budget_set(
            workspace=self.workspace,
            acting=self.membership,
            monthly_tokens=form.limits.monthly_tokens,
            monthly_cost=form.limits.monthly_cost,
        )
        messages.success(request, _saved_message(budget))
        return redirect("usage", slug=self.workspace.slug)

    def render_page(
        self, request: HttpRequest, *, form: BudgetForm | None, status: int = 200
    ) -> HttpResponse:
        workspace = self.workspace
        days = selectors.daily_totals(workspace)
        budget = selectors.budget_of(workspace)
        can_set = self.membership.has_role(Role.ADMIN)
        if form is None and can_set:
            form = BudgetForm.for_budget(budget)
        return render(
            request,
            "usage/usage.html",
            {
                "workspace": workspace,
                "membership": self.membership,
                "show_cost": self.membership.has_role(Role.ADMIN),
                "budget_form": form if can_set else None,
                "bars": selectors.chart_bars(days),
                "chart_width": selectors.CHART_WIDTH,
                "chart_height": selectors.CHART_HEIGHT,
                "total_tokens": sum(d["input_tokens"] + d["output_tokens"] for d in days),
                "by_flow": selectors.breakdown(workspace, "flow__name"),
                "by_user": selectors.breakdown(workspace, "user__email"),
                "by_model": selectors.breakdown(workspace, "model"),
                "by_key": selectors.breakdown(workspace, "api_token__name"),
                "budget": budget,
                "has_budget": budget is not None
                and (budget.monthly_tokens is not None or budget.monthly_cost is not None),
                "spent": selectors.spend_this_month(workspace.pk),
            },
            status=status,
        )


class KeyBudgetView(WorkspaceMixin, View):
    """An API key's own monthly budget, set from the API tokens page (admins and owners,
    for any key of the workspace); back to that page with what happened."""

    role_map = {"POST": Role.ADMIN}

    def post(self, request: HttpRequest, slug: str, token_id: int) -> HttpResponse:
        # Another workspace's key (or none): 404 before the form is read, recorded.
        token = get_scoped(ApiToken, self.workspace, pk=token_id)
        form = BudgetForm(request.POST)
        if form.is_valid():
            try:
                budget = services.key_budget_set(
                    workspace=self.workspace,
                    acting=self.membership,
                    api_token=token,
                    monthly_tokens=form.limits.monthly_tokens,
                    monthly_cost=form.limits.monthly_cost,
                )
            except ValidationError as exc:  # the model's own checks: nothing was written
                messages.error(request, " ".join(exc.messages))
            else:
                messages.success(request, _saved_message(budget))
        else:
            errors = [str(e) for field_errors in form.errors.values() for e in field_errors]
            messages.error(request, "Budget not changed: " + " ".join(errors))
        return redirect("tokens", slug=self.workspace.slug)
