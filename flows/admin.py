"""Admin for platform staff: the platform-wide component whitelist and its history.

Access follows Django's model permissions (superusers, or staff granted
`flows.change_componentpolicy`); the history is read-only for everyone.

Every change of a ComponentPolicy writes a ComponentPolicyChange (who, when, before,
after) in the same transaction as the change (the admin wraps saves in one).
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from accounts.tenancy import signed_in_user
from flows.components.registry import REGISTRY
from flows.diff import graph_diff
from flows.models import (
    ComponentPolicy,
    ComponentPolicyChange,
    Credential,
    Flow,
    FlowVersion,
    WorkspaceComponentPolicy,
    WorkspaceComponentPolicyChange,
)
from flows.services import record_platform_change


class ComponentPolicyForm(forms.ModelForm):
    key = forms.ChoiceField(choices=[])

    class Meta:
        model = ComponentPolicy
        fields = ["key", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        key_field = self.fields["key"]
        assert isinstance(key_field, forms.ChoiceField)  # declared as one above
        key_field.choices = [(k, f"{k} — {REGISTRY[k].label}") for k in sorted(REGISTRY)]


@admin.register(ComponentPolicy)
class ComponentPolicyAdmin(admin.ModelAdmin):
    form = ComponentPolicyForm
    list_display = ["key", "enabled", "updated_at", "updated_by"]
    list_filter = ["enabled"]
    search_fields = ["key"]
    actions = ["enable", "disable"]
    readonly_fields = ["history"]

    @admin.display(description="history")
    def history(self, obj: ComponentPolicy | None) -> str:
        if obj is None or obj.pk is None:
            return "—"
        return history_table(ComponentPolicyChange.objects.filter(key=obj.key))

    def save_model(
        self, request: HttpRequest, obj: ComponentPolicy, form: Any, change: bool
    ) -> None:
        before = None
        if obj.pk is not None:
            before = (
                ComponentPolicy.objects.filter(pk=obj.pk).values_list("enabled", flat=True).first()
            )
        obj.updated_by = signed_in_user(request)
        super().save_model(request, obj, form, change)
        record_platform_change(key=obj.key, before=before, after=obj.enabled, acting=obj.updated_by)

    def delete_model(self, request: HttpRequest, obj: ComponentPolicy) -> None:
        record_platform_change(
            key=obj.key,
            before=obj.enabled,
            after=None,
            acting=signed_in_user(request),
        )
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    @transaction.atomic
    def _set(self, request: HttpRequest, queryset: Any, enabled: bool) -> None:
        user = signed_in_user(request)
        for obj in queryset.select_for_update():
            if obj.enabled != enabled:
                before = obj.enabled
                obj.enabled = enabled
                obj.updated_by = user
                obj.save(update_fields=["enabled", "updated_by", "updated_at"])
                record_platform_change(key=obj.key, before=before, after=enabled, acting=user)

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


# --- Flows, versions, credentials and the per-workspace whitelist (issue 6) -------------
# Read-only here: these change through the product (services write history and audit);
# staff come to look, compare and investigate.


def version_diff(a: FlowVersion, b: FlowVersion) -> str:
    """An HTML side-by-side line diff of two versions' canonical pretty-printed graphs."""
    left = json.dumps(a.graph, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    right = json.dumps(b.graph, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return difflib.HtmlDiff(wrapcolumn=80).make_table(
        left, right, f"v{a.number}", f"v{b.number}", context=True, numlines=4
    )


class FlowVersionInline(admin.TabularInline):
    model = FlowVersion
    # A tuple: it fits both attributes' types (a list would be invariant).
    fields = readonly_fields = (
        "number",
        "is_draft",
        "note",
        "checksum",
        "created_by",
        "created_at",
    )
    extra = 0
    show_change_link = True
    ordering = ["-number"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Flow)
class FlowAdmin(ReadOnlyAdmin):
    list_display = ["name", "workspace", "version_count", "is_scratch", "deleted_at", "updated_at"]
    list_filter = [("workspace", admin.RelatedOnlyFieldListFilter), "is_scratch"]
    search_fields = ["name", "workspace__slug"]
    list_select_related = ["workspace"]
    readonly_fields = ["diff_link"]
    inlines = [FlowVersionInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_versions=Count("versions"))

    @admin.display(description="versions", ordering="_versions")
    def version_count(self, obj: Flow) -> int:
        return obj._versions  # type: ignore[attr-defined]  # the Count annotated in get_queryset; not a model field

    @admin.display(description="compare versions")
    def diff_link(self, obj: Flow) -> str:
        url = reverse("admin:flows_flow_diff", args=[obj.pk])
        return format_html('<a href="{}">Diff any two versions</a>', url)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:flow_id>/diff/",
                self.admin_site.admin_view(self.diff_view),
                name="flows_flow_diff",
            ),
            *super().get_urls(),
        ]

    def diff_view(self, request: HttpRequest, flow_id: int) -> HttpResponse:
        """Pick two versions of a flow (`?a=<n>&b=<n>`, default: the last two) and diff them."""
        flow = self.get_queryset(request).filter(pk=flow_id).first()
        if flow is None or not self.has_view_permission(request, flow):
            raise Http404("No such flow")
        numbers = list(
            FlowVersion.objects.filter(flow=flow)
            .order_by("-number")
            .values_list("number", flat=True)
        )

        def picked(name: str, default: int | None) -> int | None:
            raw = request.GET.get(name, "")
            return int(raw) if raw.isdigit() and int(raw) in numbers else default

        b = picked("b", numbers[0] if numbers else None)
        a = picked("a", numbers[1] if len(numbers) > 1 else b)
        table, diff = "", None
        if a is not None and b is not None:
            versions = {
                v.number: v for v in FlowVersion.objects.filter(flow=flow, number__in=[a, b])
            }
            table = version_diff(versions[a], versions[b])
            diff = graph_diff(versions[a].graph, versions[b].graph)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{flow.name}: compare versions",
            "flow": flow,
            "numbers": numbers,
            "a": a,
            "b": b,
            "table": table,
            "diff": diff,
        }
        return TemplateResponse(request, "admin/flows/flow_diff.html", context)


@admin.register(FlowVersion)
class FlowVersionAdmin(ReadOnlyAdmin):
    list_display = [
        "__str__",
        "workspace",
        "number",
        "is_draft",
        "checksum",
        "created_by",
        "created_at",
    ]
    list_filter = [("workspace", admin.RelatedOnlyFieldListFilter), "is_draft"]
    search_fields = ["flow__name", "checksum"]
    list_select_related = ["flow", "workspace", "created_by"]
    fields = readonly_fields = (
        "flow",
        "number",
        "is_draft",
        "note",
        "checksum",
        "created_by",
        "created_at",
        "pretty_graph",
        "diff_link",
    )

    @admin.display(description="graph")
    def pretty_graph(self, obj: FlowVersion) -> str:
        text = json.dumps(obj.graph, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)

    @admin.display(description="diff")
    def diff_link(self, obj: FlowVersion) -> str:
        url = reverse("admin:flows_flow_diff", args=[obj.flow_id])
        return format_html(
            '<a href="{}?a={}&amp;b={}">Diff with the previous version</a>',
            url,
            max(1, obj.number - 1),
            obj.number,
        )


@admin.register(Credential)
class CredentialAdmin(ReadOnlyAdmin):
    """Names, providers and endpoints only: the key shows as "set"/"not set", never itself."""

    list_display = ["name", "workspace", "provider", "base_url", "api_key", "updated_at"]
    list_filter = ["provider", ("workspace", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "workspace__slug", "base_url"]
    list_select_related = ["workspace"]
    fields = readonly_fields = (
        "workspace",
        "name",
        "provider",
        "base_url",
        "api_key",
        "created_by",
        "created_at",
        "updated_at",
    )

    @admin.display(description="API key")
    def api_key(self, obj: Credential) -> str:
        return "set" if obj.has_api_key else "not set"


@admin.register(WorkspaceComponentPolicy)
class WorkspaceComponentPolicyAdmin(ReadOnlyAdmin):
    """A workspace's narrowing of the whitelist (its admins change it), with its history."""

    list_display = ["workspace", "key", "enabled", "updated_at", "updated_by"]
    list_filter = ["enabled", "key", ("workspace", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["key", "workspace__slug"]
    list_select_related = ["workspace", "updated_by"]
    fields = readonly_fields = (
        "workspace",
        "key",
        "enabled",
        "updated_at",
        "updated_by",
        "history",
    )

    @admin.display(description="history")
    def history(self, obj: WorkspaceComponentPolicy) -> str:
        return history_table(
            WorkspaceComponentPolicyChange.objects.filter(
                workspace_id=obj.workspace_id, key=obj.key
            )
        )


def history_table(changes: QuerySet) -> str:
    """The newest 50 whitelist changes (who, when, before, after) as a small table."""
    rows = changes.select_related("changed_by").order_by("-changed_at", "-pk")[:50]
    return format_html(
        "<table><tr><th>when</th><th>who</th><th>before</th><th>after</th></tr>{}</table>",
        format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    c.changed_at.strftime("%Y-%m-%d %H:%M:%S"),
                    c.changed_by.email if c.changed_by else "—",
                    json.dumps(c.before),
                    json.dumps(c.after),
                )
                for c in rows
            ),
        ),
    )
