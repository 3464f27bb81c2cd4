"""The workspace's usage page (Settings): tokens per day over 30 days, per flow, member
and model, and the month's spend against the budget. Every member sees tokens; cost and
the cost budget are for admins and owners (what the workspace pays is their business)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View

from accounts.models import Role
from accounts.tenancy import WorkspaceMixin
from usage import selectors


class UsageView(WorkspaceMixin, View):
    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        workspace = self.workspace
        days = selectors.daily_totals(workspace)
        budget = selectors.budget_of(workspace)
        return render(
            request,
            "usage/usage.html",
            {
                "workspace": workspace,
                "membership": self.membership,
                "show_cost": self.membership.has_role(Role.ADMIN),
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
        )
