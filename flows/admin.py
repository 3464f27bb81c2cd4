"""Admin for platform staff: the platform-wide component whitelist and its history.

Access follows Django's model permissions (superusers, or staff granted
`flows.change_componentpolicy`); the history is read-only for everyone.

Every change of a ComponentPolicy writes a ComponentPolicyChange (who, when, before,
after) in the same transaction as the change (the admin wraps saves in one).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest

from flows.components.registry import REGISTRY
from flows.models import ComponentPolicy, ComponentPolicyChange, WorkspaceComponentPolicyChange
from flows.services import record_platform_change


class ComponentPolicyForm(forms.ModelForm):
    key = forms.ChoiceField(choices=[])

    class Meta:
        model = ComponentPolicy
        fields = ["key", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["key"].choices = [(k, f"{k} — {REGISTRY[k].label}") for k in sorted(REGISTRY)]


@admin.register(ComponentPolicy)
class ComponentPolicyAdmin(admin.ModelAdmin):
    form = ComponentPolicyForm
    list_display = ["key", "enabled", "updated_at", "updated_by"]
    list_filter = ["enabled"]
    search_fields = ["key"]
    actions = ["enable", "disable"]

    def save_model(
        self, request: HttpRequest, obj: ComponentPolicy, form: Any, change: bool
    ) -> None:
        before = None
        if obj.pk is not None:
            before = (
                ComponentPolicy.objects.filter(pk=obj.pk).values_list("enabled", flat=True).first()
            )
        obj.updated_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)
        record_platform_change(
            key=obj.key,
            before=before,
            after=obj.enabled,
            acting_user=request.user,  # type: ignore[arg-type]
        )

    def delete_model(self, request: HttpRequest, obj: ComponentPolicy) -> None:
        record_platform_change(
            key=obj.key,
            before=obj.enabled,
            after=None,
            acting_user=request.user,  # type: ignore[arg-type]
        )
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    @transaction.atomic
    def _set(self, request: HttpRequest, queryset: Any, enabled: bool) -> None:
        for obj in queryset.select_for_update():
            if obj.enabled != enabled:
                before = obj.enabled
                obj.enabled = enabled
                obj.updated_by = request.user
                obj.save(update_fields=["enabled", "updated_by", "updated_at"])
                record_platform_change(
                    key=obj.key,
                    before=before,
                    after=enabled,
                    acting_user=request.user,  # type: ignore[arg-type]
                )

    @admin.action(description="Enable selected components")
    def enable(self, request: HttpRequest, queryset: Any) -> None:
        self._set(request, queryset, True)

    @admin.action(description="Disable selected components")
    def disable(self, request: HttpRequest, queryset: Any) -> None:
        self._set(request, queryset, False)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ComponentPolicyChange)
class ComponentPolicyChangeAdmin(ReadOnlyAdmin):
    list_display = ["changed_at", "key", "before", "after", "changed_by"]
    list_filter = ["key"]


@admin.register(WorkspaceComponentPolicyChange)
class WorkspaceComponentPolicyChangeAdmin(ReadOnlyAdmin):
    list_display = ["changed_at", "workspace", "key", "before", "after", "changed_by"]
    list_filter = ["key"]
