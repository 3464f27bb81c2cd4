"""The audit trail in the admin: read-only for everyone, superusers included.

No add, change or delete permission is ever granted, so the admin offers no form, no save
and no delete action. Every platform staff member (is_staff) may read every workspace's
entries: investigating incidents is what the admin is for.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["seq", "created_at", "workspace_label", "actor_label", "action", "target", "ip"]
    list_filter = ["action", "workspace"]
    search_fields = ["actor_label", "target", "action", "=ip"]
    date_hierarchy = "created_at"
    ordering = ["-seq"]
    list_per_page = 100
    show_full_result_count = False  # counting a large trail on every page is slow
    actions = None
    # A tuple: it fits both attributes' types (a list would be invariant).
    fields = readonly_fields = (
        "seq",
        "created_at",
        "workspace_label",
        "actor_id",
        "actor_label",
        "action",
        "target",
        "before_pretty",
        "after_pretty",
        "ip",
        "user_agent",
        "prev_hash",
        "hash",
    )

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("workspace")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        return bool(user.is_active and user.is_staff)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="workspace", ordering="workspace__slug")
    def workspace_label(self, obj: AuditEntry) -> str:
        if obj.workspace_id is None:
            return "(platform)"
        return obj.workspace.slug if obj.workspace is not None else f"#{obj.workspace_id} (deleted)"

    @admin.display(description="before")
    def before_pretty(self, obj: AuditEntry) -> str:
        return _pretty(obj.before)

    @admin.display(description="after")
    def after_pretty(self, obj: AuditEntry) -> str:
        return _pretty(obj.after)


def _pretty(value: Any) -> str:
    if value is None:
        return "-"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True))
