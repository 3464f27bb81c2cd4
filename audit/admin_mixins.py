"""The admin is a door like any other: every change made there is recorded in the trail.

`AuditedAdmin` snapshots the audited fields of a row before and after the admin saves or
deletes it and hands the difference to `audit_change`, which names the registry action;
Django's own admin log (unkeyed, editable) is not the record. Django's admin already runs
each change view and delete in a transaction; bulk actions here run in one too.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models, transaction
from django.http import HttpRequest

from audit.services import record


def snapshot(obj: models.Model | None, fields: tuple[str, ...]) -> dict[str, Any] | None:
    if obj is None:
        return None
    return {name: getattr(obj, name) for name in fields}


class AuditedAdmin(admin.ModelAdmin):
    audit_fields: tuple[str, ...] = ()

    def audit_change(
        self,
        request: HttpRequest,
        obj: models.Model,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        """Record the change (`before` None: created; `after` None: deleted)."""
        raise NotImplementedError

    def _stored(self, obj: models.Model) -> models.Model | None:
        if obj.pk is None:
            return None
        return type(obj)._default_manager.filter(pk=obj.pk).first()

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        before = snapshot(self._stored(obj), self.audit_fields)
        super().save_model(request, obj, form, change)
        after = snapshot(obj, self.audit_fields)
        if before != after:
            self.audit_change(request, obj, before, after)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        before = snapshot(obj, self.audit_fields)
        self.audit_change(request, obj, before, None)
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in queryset:
            self.delete_model(request, obj)


def changed(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict, dict]:
    """Only the fields that differ, as (before, after)."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def record_admin(request: HttpRequest, **entry: Any) -> None:
    record(actor=request.user, **entry)
