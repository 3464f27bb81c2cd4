"""Runs API: start, read, page through events, cancel, re-run (docs/protocol.md, "HTTP API").

The Server-Sent Events stream lives in runs/sse.py (a streaming view, not a JSON route).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError

from accounts.api_auth import DbInt, WorkspaceSlug, context, for_flow_keys, minimum_role
from accounts.models import Role
from flows.access import access_flow
from runs import approvals, selectors, services
from runs.access import access_run
from runs.models import Approval, Run
from runs.schemas import MAX_EVENT_PAGE, EventsQuery, RerunIn, RunStartIn

router = Router(tags=["runs"])

class RunStartedOut(Schema):
    run_id: str
    session_id: str


class RunOut(Schema):
    id: str
    flow: int
    flow_version: int
    session_id: str
    status: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    error: str
    started_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_seq: int
    rerun_of: str | None
    rerun_from_node: str


class EventsOut(Schema):
    run_id: str
    events: list[dict[str, Any]]
    next_after_seq: int
    finished: bool


def run_out(run: Run) -> dict[str, Any]:
    return {
        "id": str(run.pk),
        "flow": run.flow_id,
        "flow_version": run.flow_version.number,
        "session_id": run.session_id,
        "status": run.status,
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "started_by": run.started_by.email if run.started_by else None,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "last_seq": run.last_seq,
        "rerun_of": str(run.rerun_of_id) if run.rerun_of_id else None,
        "rerun_from_node": run.rerun_from_node,
    }


@router.post("flows/{int:flow_id}/runs", response={202: RunStartedOut})
@minimum_role(Role.EDITOR)
def start_run(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, body: RunStartIn) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    run = services.run_start(
        workspace=context(request).workspace,
        acting=context(request).membership,
        session_id=body.session_id or services.new_session_id(),
        flow=flow,
        version_number=body.version,
        inputs=body.inputs,
        api_token=context(request).token,
    )
    return Status(202, {"run_id": str(run.pk), "session_id": run.session_id})


@router.get("runs", response=list[RunOut])
@minimum_role(Role.VIEWER)
@for_flow_keys  # a key scoped to named flows lists their runs
def list_runs(request: HttpRequest, slug: WorkspaceSlug, flow: DbInt | None = None) -> Any:
    runs = selectors.runs_for_workspace(context(request).workspace, flow_id=flow)
    if (scope := context(request).membership.flow_scope) is not None:
        runs = runs.filter(flow_id__in=scope)
    return [run_out(r) for r in runs[:200]]


@router.get("runs/{run_id}", response=RunOut)
@minimum_role(Role.VIEWER)
def get_run(request: HttpRequest, slug: WorkspaceSlug, run_id: str) -> Any:
    return run_out(access_run(context(request).membership, run_id))


@router.get("runs/{run_id}/events", response=EventsOut)
@minimum_role(Role.VIEWER)
def run_events(
    request: HttpRequest, slug: WorkspaceSlug, run_id: str, q: Query[EventsQuery]
) -> Any:
    if q.after_seq < 0 or not 1 <= q.limit <= MAX_EVENT_PAGE:
        raise HttpError(400, f"after_seq >= 0 and 1 <= limit <= {MAX_EVENT_PAGE}.")
    run = access_run(context(request).membership, run_id)
    events = selectors.event_messages_after(
        context(request).workspace,
        str(run.pk),
        q.after_seq,
        limit=q.limit,
    )
    last = events[-1]["seq"] if events else q.after_seq
    return {
        "run_id": str(run.pk),
        "events": events,
        "next_after_seq": last,
        "finished": run.is_finished and last >= run.last_seq,
    }


@router.post("runs/{run_id}/cancel", response=RunOut)
@minimum_role(Role.EDITOR)
def cancel_run(request: HttpRequest, slug: WorkspaceSlug, run_id: str) -> Any:
    run = access_run(context(request).membership, run_id)
    run = services.run_cancel(
        workspace=context(request).workspace,
        acting=context(request).membership,
        run=run,
    )
    return run_out(run)


@router.post("runs/{run_id}/rerun", response={202: RunStartedOut})
@minimum_role(Role.EDITOR)
def rerun(request: HttpRequest, slug: WorkspaceSlug, run_id: str, body: RerunIn) -> Any:
    original = access_run(context(request).membership, run_id)
    run = services.run_rerun(
        workspace=context(request).workspace,
        acting=context(request).membership,
        run=original,
        session_id=body.session_id or services.new_session_id(),
        from_node=body.from_node,
    )
    return Status(202, {"run_id": str(run.pk), "session_id": run.session_id})


# --- human approval (runs.approvals) ------------------------------------------------------
class ApprovalOut(Schema):
    run_id: str
    flow: int
    node_id: str
    prompt: str
    role: str
    allow_edit: bool
    value: Any
    status: str
    timeout_at: datetime | None
    decided_value: Any
    comment: str
    decided_by: str | None
    decided_at: datetime | None
    timed_out: bool
    created_at: datetime


class DecisionIn(Schema):
    decision: Literal["approve", "reject"]
    value: Any = Field(None, description="Approve with this value instead (if the node allows).")
    comment: str = Field("", max_length=2000)


def approval_out(approval: Approval) -> dict[str, Any]:
    return {
        "run_id": str(approval.run_id),
        "flow": approval.run.flow_id,
        "node_id": approval.node_id,
        "prompt": approval.prompt,
        "role": approval.role,
        "allow_edit": approval.allow_edit,
        "value": approval.value,
        "status": approval.status,
        "timeout_at": approval.timeout_at,
        "decided_value": approval.decided_value,
        "comment": approval.comment,
        "decided_by": approval.decided_by.email if approval.decided_by else None,
        "decided_at": approval.decided_at,
        "timed_out": approval.timed_out,
        "created_at": approval.created_at,
    }


@router.get("approvals", response=list[ApprovalOut], summary="Approvals waiting for a decision")
@minimum_role(Role.VIEWER)
@for_flow_keys
def pending_approvals(request: HttpRequest, slug: WorkspaceSlug) -> Any:
    membership = context(request).membership
    found = approvals.pending_approvals(context(request).workspace)
    scope = membership.flow_scope
    if scope is not None:
        found = found.filter(run__flow_id__in=scope)
    return [approval_out(a) for a in found[:200]]


@router.get("runs/{run_id}/approvals", response=list[ApprovalOut])
@minimum_role(Role.VIEWER)
def run_approvals(request: HttpRequest, slug: WorkspaceSlug, run_id: str) -> Any:
    run = access_run(context(request).membership, run_id)
    return [approval_out(a) for a in run.approvals.select_related("run", "decided_by")]


@router.post("runs/{run_id}/approvals/{node_id}", response=ApprovalOut, summary="Decide")
@minimum_role(Role.EDITOR)  # and the node's own role (runs.approvals)
def decide(
    request: HttpRequest, slug: WorkspaceSlug, run_id: str, node_id: str, body: DecisionIn
) -> Any:
    run = access_run(context(request).membership, run_id)
    edited = {"value": body.value} if "value" in body.model_fields_set else {}
    approval = approvals.approval_decide(
        workspace=context(request).workspace,
        acting=context(request).membership,
        run_id=run.pk,
        node_id=node_id[:100],
        approve=body.decision == "approve",
        comment=body.comment,
        **edited,
    )
    return approval_out(approval)
