from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.admin_mixins import AuditedAdmin, changed, record_admin
from usage.models import ModelPrice, WorkspaceBudget


def _storable(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """Prices as strings: the trail is JSON, and a Decimal's digits are the record."""
    if values is None:
        return None
    return {k: str(v) for k, v in values.items()}


@admin.register(ModelPrice)
class ModelPriceAdmin(AuditedAdmin):
    list_display = ["model", "input_per_million", "output_per_million", "currency", "updated_at"]
    search_fields = ["model"]
    audit_fields = ("model", "input_per_million", "output_per_million", "currency")

    def audit_change(self, request: HttpRequest, obj: Any, before: Any, after: Any) -> None:
        target = f"model_price:{obj.model}"
        before, after = _storable(before), _storable(after)
        if before is None:
            record_admin(request, action="model_price.create", target=target, after=after)
        elif after is None:
            record_admin(request, action="model_price.delete", target=target, before=before)
        else:
            old, new = changed(before, after)
            record_admin(request, action="model_price.update", target=target, before=old, after=new)


@admin.register(WorkspaceBudget)
class WorkspaceBudgetAdmin(AuditedAdmin):
    list_display = ["workspace", "monthly_tokens", "monthly_cost", "updated_at"]
    search_fields = ["workspace__slug", "workspace__name"]
    autocomplete_fields = ["workspace"]
    audit_fields = ("monthly_tokens", "monthly_cost")

    def audit_change(self, request: HttpRequest, obj: Any, before: Any, after: Any) -> None:
        target = f"workspace:{obj.workspace.slug}"
        before, after = _storable(before), _storable(after)
        if before is None:
            action, old, new = "budget.set", None, after
        elif after is None:
            action, old, new = "budget.remove", before, None
        else:
            action = "budget.set"
            old, new = changed(before, after)
        record_admin(
            request, action=action, workspace=obj.workspace, target=target, before=old, after=new
        )
