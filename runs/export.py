"""Export one run as JSON Lines for offline analysis (issue 6, point 6).

`GET /w/<slug>/runs/<run_id>/export.jsonl` (viewers and up) and the same file from the
admin run page for platform staff. The file is:

1. a header: `{"kind": "run", "format": ..., "run": {id, flow, version, status, inputs,
   outputs, timestamps, started_by, ...}}`;
2. the exact graph that ran: `{"kind": "graph", "version", "checksum", "graph"}`;
3. one line per event in seq order, each exactly the event's wire form
   (`RunEvent.as_message()`: what the WebSocket, the events API and the SSE stream send).

Events are read in keyset pages (seq > last), so a run of 100,000 events streams in
constant memory. Nothing here reads credentials: graphs hold credential ids, never keys.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.http import HttpRequest, StreamingHttpResponse
from django.views import View

from accounts.models import Role, User
from accounts.tenancy import WorkspaceMixin, scoped, signed_in_user
from audit.services import record
from runs.access import access_run
from runs.models import Run, RunEvent

EXPORT_FORMAT = "flowdeck.run_export"
EXPORT_FORMAT_VERSION = 1
EXPORT_PAGE = 1000


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, cls=DjangoJSONEncoder, ensure_ascii=False, sort_keys=True) + "\n"


def export_head(run: Run) -> list[str]:
    """The header and graph lines of a run's export."""
    version = run.flow_version
    header = {
        "kind": "run",
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "run": {
            "id": str(run.pk),
            "workspace": run.workspace.slug,
            "flow": {"id": run.flow_id, "name": run.flow.name},
            "version": version.number,
            "status": run.status,
            "error": run.error,
            "inputs": run.inputs,
            "outputs": run.outputs,
            "created_at": run.created_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "started_by": run.started_by.email if run.started_by else None,
            "rerun_of": str(run.rerun_of_id) if run.rerun_of_id else None,
            "last_seq": run.last_seq,
        },
    }
    graph = {
        "kind": "graph",
        "version": version.number,
        "checksum": version.checksum,
        "is_draft": version.is_draft,
        "graph": version.graph,
    }
    return [_line(header), _line(graph)]


EVENT_FIELDS = ("event", "run_id", "seq", "node_id", "ts", "payload")


def _event_page(run: Run, after: int) -> tuple[str, int, int]:
    """One keyset page of event lines as one chunk: (text, events in it, last seq).

    Rows come as named tuples carrying exactly the attributes `RunEvent.as_message` reads,
    so the wire form has one definition while a 100,000-event export skips building
    100,000 model instances (most of its cost).
    """
    rows = list(
        scoped(RunEvent, run.workspace)
        .filter(run_id=run.pk, seq__gt=after)
        .order_by("seq")
        .values_list(*EVENT_FIELDS, named=True)[:EXPORT_PAGE]
    )
    text = "".join(_line(RunEvent.as_message(row)) for row in rows)
    return text, len(rows), rows[-1].seq if rows else after


def export_lines(run: Run) -> Iterator[str]:
    """The whole export, a page of events per chunk; never the whole log in memory."""
    yield "".join(export_head(run))
    after = 0
    while True:
        text, count, after = _event_page(run, after)
        if text:
            yield text
        if count < EXPORT_PAGE:
            return


async def aexport_lines(run: Run) -> AsyncIterator[str]:
    """The same chunks for an ASGI server; each page is read in a worker thread."""
    yield "".join(await sync_to_async(export_head)(run))
    after = 0
    while True:
        text, count, after = await sync_to_async(_event_page)(run, after)
        if text:
            yield text
        if count < EXPORT_PAGE:
            return


def load_run_for_export(run: Run) -> Run:
    return (
        scoped(Run, run.workspace)
        .select_related("workspace", "flow", "flow_version", "started_by")
        .get(pk=run.pk)
    )


def export_response(request: HttpRequest, run: Run) -> StreamingHttpResponse:
    """A streaming attachment. Under ASGI the iterator must be async, or Django would read
    it whole into memory before sending; under WSGI (and the test client) it must be sync."""
    lines = aexport_lines(run) if isinstance(request, ASGIRequest) else export_lines(run)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}.jsonl"'
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    return response


def record_export(*, action: str, run: Run, actor: User) -> None:
    """Audit an export (`run.export` by a member, `admin.export` by platform staff) before
    the first byte goes out; IP and user agent come from the request context."""
    with transaction.atomic():
        record(
            action=action,
            workspace=run.workspace,
            actor=actor,
            target=f"run:{run.pk}",
            after={
                "format_version": EXPORT_FORMAT_VERSION,
                "version": run.flow_version.number,
                "events": run.last_seq,
            },
        )


class RunExportView(WorkspaceMixin, View):
    """A workspace member downloads one run of the workspace as JSONL."""

    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str, run_id: str) -> StreamingHttpResponse:
        run = load_run_for_export(access_run(self.membership, run_id))
        record_export(action="run.export", run=run, actor=signed_in_user(request))
        return export_response(request, run)
