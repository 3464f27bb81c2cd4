"""Reads for runs and their event logs."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Workspace
from accounts.tenancy import scoped
from runs.models import Run, RunEvent

EVENT_PAGE = 1000


def runs_for_workspace(workspace: Workspace, *, flow_id: int | None = None) -> QuerySet[Run]:
    runs = scoped(Run, workspace).select_related("flow", "flow_version", "started_by")
    if flow_id is not None:
        runs = runs.filter(flow_id=flow_id)
    return runs.order_by("-created_at")


def run_events_after(
    workspace: Workspace,
    run_id: str,
    after_seq: int,
    *,
    limit: int = EVENT_PAGE,
    upto_seq: int | None = None,
) -> list[RunEvent]:
    """Events of one run with seq > after_seq (and <= upto_seq), in order, at most `limit`."""
    events = scoped(RunEvent, workspace).filter(run_id=run_id, seq__gt=after_seq)
    if upto_seq is not None:
        events = events.filter(seq__lte=upto_seq)
    return list(events.order_by("seq")[:limit])


def event_messages_after(
    workspace: Workspace,
    run_id: str,
    after_seq: int,
    *,
    limit: int = EVENT_PAGE,
    upto_seq: int | None = None,
) -> list[dict]:
    return [
        e.as_message()
        for e in run_events_after(workspace, run_id, after_seq, limit=limit, upto_seq=upto_seq)
    ]
