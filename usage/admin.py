from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.admin_mixins import AuditedAdmin, changed, record_admin
from usage.models import KeyBudget, ModelPrice, WorkspaceBudget


def _storable(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """Prices as strings: the trail is JSON, and a Decimal's digits are the record."""
    if values is None:
        return None
    return {k: _text(v) for k, v in values.items()}


def _text(value: Any) -> str | None:
    """A value as the trail shows it; a Decimal without trailing zeros (2.500000 as the
    database gives it back and 2.5 as it was typed are the same price)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


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


@admin.register(KeyBudget)
class KeyBudgetAdmin(AuditedAdmin):
    list_display = ["api_token", "monthly_tokens", "monthly_cost", "updated_at"]
    search_fields = ["api_token__name", "api_token__prefix", "api_token__workspace__slug"]
    raw_id_fields = ["api_token"]
    audit_fields = ("monthly_tokens", "monthly_cost")

    def audit_change(self, request: HttpRequest, obj: Any, before: Any, after: Any) -> None:
        token = obj.api_token
        target = f"token:{token.pk}"
        before, after = _storable(before), _storable(after)
        if before is None:
            action, old, new = "budget.set", None, after
        elif after is None:
            action, old, new = "budget.remove", before, None
        else:
            action = "budget.set"
            old, new = changed(before, after)
        record_admin(
            request, action=action, workspace=token.workspace, target=target, before=old, after=new
        )
