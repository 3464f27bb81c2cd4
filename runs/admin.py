"""Admin for platform staff: runs across every workspace, read-only.

The change page of a run is replaced by a run page (templates/admin/runs/run_page.html):
metadata, inputs, outputs, a timeline picture and the event log paged by seq. Both stay
fast on a run of 100,000 events: the log is read one keyset page at a time (`seq > after`,
the (run, seq) index), totals come from `Run.last_seq` (no COUNT), and the timeline from
one aggregate query. Runs and their events cannot be added, changed or deleted here: the
log is the record of what happened.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from accounts.tenancy import signed_in_user
from runs import selectors
from runs.export import export_response, load_run_for_export, record_export
from runs.models import Run
from runs.timeline import run_summary

EVENT_PAGE_SIZE = 100
PAYLOAD_PREVIEW = 400


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "workspace",
        "flow",
        "version",
        "status",
        "started_by",
        "created_at",
        "duration",
        "last_seq",
    ]
    list_filter = [
        "status",
        ("workspace", admin.RelatedOnlyFieldListFilter),
        ("flow", admin.RelatedOnlyFieldListFilter),
        ("started_by", admin.RelatedOnlyFieldListFilter),
    ]
    date_hierarchy = "created_at"
    search_fields = ["flow__name", "started_by__email"]
    search_help_text = "A run id (exact), a flow name or a user's email."
    list_select_related = ["workspace", "flow", "flow_version", "started_by"]
    show_full_result_count = False  # no second COUNT(*) over every run per list page
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="run", ordering="id")
    def short_id(self, obj: Run) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="version", ordering="flow_version__number")
    def version(self, obj: Run) -> str:
        return f"v{obj.flow_version.number}"

    @admin.display(description="duration")
    def duration(self, obj: Run) -> str:
        seconds = obj.duration_seconds
        return "—" if seconds is None else f"{seconds:.2f} s"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        try:
            run_id = uuid.UUID(term)
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(pk=run_id), False

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<uuid:run_id>/export.jsonl", view(self.export_view), name="runs_run_export"),
            path(
                "<uuid:run_id>/compare/<uuid:other_id>/",
                view(self.compare_view),
                name="runs_run_compare",
            ),
            *super().get_urls(),
        ]

    def _run(self, request: HttpRequest, run_id: Any) -> Run:
        run = (
            self.get_queryset(request)
            .select_related("workspace", "flow", "flow_version", "started_by", "rerun_of")
            .filter(pk=run_id)
            .first()
        )
        if run is None or not self.has_view_permission(request, run):
            raise Http404("No such run")
        return run

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The run page (replaces the read-only form)."""
        try:
            run = self._run(request, uuid.UUID(str(object_id)))
        except ValueError as exc:
            raise Http404("No such run") from exc
        try:
            after = max(0, int(request.GET.get("after", "0")))
        except ValueError:
            after = 0
        if request.GET.get("seq", "").isdigit():
            after = max(0, int(request.GET["seq"]) - 1)
        page = selectors.run_event_page(run, after=after, size=EVENT_PAGE_SIZE)
        events = [
            {
                "seq": e.seq,
                "ts": e.ts,
                "event": e.event,
                "node_id": e.node_id,
                "payload": _preview(e.payload),
            }
            for e in page.events
        ]
        reruns = list(run.reruns.order_by("-created_at").values_list("pk", "status")[:20])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Run {run.pk}",
            "run": run,
            **run_summary(run),
            "page": page,
            "events": events,
            "page_size": EVENT_PAGE_SIZE,
            "first_shown": page.events[0].seq if page.events else None,
            "last_shown": page.events[-1].seq if page.events else None,
            "reruns": reruns,
            "export_url": reverse("admin:runs_run_export", args=[run.pk]),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/runs/run_page.html", context)

    def export_view(self, request: HttpRequest, run_id: uuid.UUID) -> StreamingHttpResponse:
        run = load_run_for_export(self._run(request, run_id))
        record_export(action="admin.export", run=run, actor=signed_in_user(request))
        return export_response(request, run)

    def compare_view(
        self, request: HttpRequest, run_id: uuid.UUID, other_id: uuid.UUID
    ) -> HttpResponse:
        from runs.compare import compare_context

        run_a = self._run(request, run_id)
        run_b = self._run(request, other_id)
        if run_a.workspace_id != run_b.workspace_id:
            raise Http404("Runs of different workspaces are not compared")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Compare runs",
            **compare_context(run_a.workspace, run_a, run_b),
        }
        return TemplateResponse(request, "admin/runs/run_compare.html", context)


def _preview(payload: Any) -> str:
    text = json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= PAYLOAD_PREVIEW else text[:PAYLOAD_PREVIEW] + " …"
