"""The workspace audit page and its exports, for workspace owners and admins.

Only the workspace's own entries, through `accounts.tenancy.scoped`; filters by actor
(email at the time), action and date range; newest first, paged by seq (no COUNT over a
large trail). Exports stream JSONL or CSV with the same filters, oldest first, and are
themselves recorded (`audit.export`) before the first byte leaves.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views import View

from accounts.models import Role
from accounts.tenancy import WorkspaceMixin, signed_in_user
from audit import actions, selectors, services
from audit.models import AuditEntry

PAGE_SIZE = 50
EXPORT_FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
CSV_COLUMNS = [
    "seq",
    "created_at",
    "actor",
    "action",
    "target",
    "before",
    "after",
    "ip",
    "user_agent",
    "prev_hash",
    "hash",
]


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=254, label="Actor (email)")
    action = forms.ChoiceField(required=False, choices=[("", "Any action"), *actions.choices()])
    since = forms.DateField(required=False, label="From", widget=forms.DateInput({"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput({"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError("The start date is after the end date.")
        return data

    def filters(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "actor": data.get("actor") or "",
            "action": data.get("action") or "",
            "since": data.get("since"),
            "until": data.get("until"),
        }


def _filters_for_log(filters: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in filters.items() if v}


class AuditLogView(WorkspaceMixin, View):
    """The workspace's audit trail, newest first, `PAGE_SIZE` entries a page."""

    role_map = {"GET": Role.ADMIN}

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        form = AuditFilterForm(request.GET or None)
        context: dict[str, Any] = {
            "workspace": self.workspace,
            "membership": self.membership,
            "form": form,
            "actors": selectors.actor_labels_for_workspace(self.workspace),
            "entries": [],
            "older": None,
            "query": "",
        }
        if request.GET and not form.is_valid():
            return render(request, "audit/audit_log.html", context, status=400)
        filters = form.filters() if request.GET else {}
        entries = selectors.entries_for_workspace(self.workspace, **filters)
        before = _positive_int(request.GET.get("before"))
        if before is not None:
            entries = entries.filter(seq__lt=before)
        page = list(entries[: PAGE_SIZE + 1])
        for entry in page:  # readable JSON, not Python reprs
            entry.before_text = _compact(entry.before)  # type: ignore[attr-defined]  # display-only, for the template; not a model field
            entry.after_text = _compact(entry.after)  # type: ignore[attr-defined]  # display-only, for the template; not a model field
        query = request.GET.copy()
        query.pop("before", None)
        context.update(
            entries=page[:PAGE_SIZE],
            older=page[PAGE_SIZE - 1].seq if len(page) > PAGE_SIZE else None,
            query=query.urlencode(),
            paged=before is not None,
        )
        return render(request, "audit/audit_log.html", context)


class AuditExportView(WorkspaceMixin, View):
    """`?format=jsonl|csv` plus the page's filters: the matching entries, oldest first."""

    role_map = {"GET": Role.ADMIN}

    def get(self, request: HttpRequest, slug: str) -> HttpResponseBase:
        fmt = request.GET.get("format", "jsonl")
        if fmt not in EXPORT_FORMATS:
            return HttpResponse(
                "Unknown format: use format=jsonl or format=csv.",
                status=400,
                content_type="text/plain",
            )
        form = AuditFilterForm(request.GET)
        if not form.is_valid():
            errors = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items())
            return HttpResponse(f"Invalid filters: {errors}", status=400, content_type="text/plain")
        filters = form.filters()
        services.audit_export_record(
            workspace=self.workspace,
            acting=signed_in_user(request),
            fmt=fmt,
            filters=_filters_for_log(filters),
        )
        entries = selectors.entries_for_workspace(self.workspace, **filters).order_by("seq")
        rows = entries.iterator(chunk_size=2000)
        body = _jsonl(rows) if fmt == "jsonl" else _csv(rows)
        response = StreamingHttpResponse(body, content_type=EXPORT_FORMATS[fmt])
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = (
            f'attachment; filename="audit-{self.workspace.slug}-{stamp}.{fmt}"'
        )
        return response


def _compact(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None


def _jsonl(rows: Iterable[AuditEntry]) -> Iterator[str]:
    for entry in rows:
        yield json.dumps(selectors.entry_as_dict(entry), ensure_ascii=False, sort_keys=True) + "\n"


class _Echo:
    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    # Spreadsheets run cells that start like formulas: defuse them (OWASP CSV injection).
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def _csv(rows: Iterable[AuditEntry]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for entry in rows:
        data = selectors.entry_as_dict(entry)
        yield writer.writerow([_cell(data[column]) for column in CSV_COLUMNS])
