"""Human approval: a run that waits for a person (flows.components.approval).

The life of a decision:

1. The executor reaches an approval node. It writes the question as an `Approval` row
   (`ask_for_approval`), then logs `waiting_for_approval`. Independent branches go on;
   nodes behind the approval do not run. When nothing else can run, the execution ends
   `waiting`: its log is written, its lease given up; no worker thread, no Celery task,
   nothing in memory holds it (runs.engine.executor._pause).
2. A member with the node's role (or above) decides (`approval_decide`, over the
   WebSocket or the HTTP API): approve, optionally with an edited value, or reject, with a
   comment; audited. If the run is waiting it is queued again at once; if its execution is
   still going (another branch), `requeue_if_decided` queues it when that execution ends
   (both take the run's row lock, so one of them always sees the other).
3. A worker claims it like any queued run. `resume_state` reads what its nodes did from
   its own log (they do not run again), the executor logs `run_resumed`, then
   `approval_decided` and `node_finished` on the approval node, and goes on.

A timeout (`expire_approvals`, from the beat's reaper task) decides with the node's
`on_timeout`. Cancelling a waiting run ends it at once (runs.services.run_cancel).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Role, Workspace
from accounts.tenancy import require_role, scoped
from audit.services import record
from config.jsontext import storable
from runs.engine.rerun import recorded_outputs
from runs.models import Approval, ApprovalStatus, Run, RunEvent, RunStatus
from runs.selectors import node_outcomes

MAX_COMMENT_CHARS = 2000
MAX_VALUE_CHARS = 100_000
UNCHANGED = object()


class ApprovalRefused(Exception):
    """A decision that cannot be taken: a stable code and a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


# --- what a resumed run reads back --------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    approved: bool
    value: Any
    by: str | None
    comment: str
    edited: bool
    timed_out: bool

    @property
    def port(self) -> str:
        return "approved" if self.approved else "rejected"

    def event_data(self) -> dict[str, Any]:
        return {
            "decision": "approved" if self.approved else "rejected",
            "by": self.by,
            "comment": self.comment,
            "edited": self.edited,
            "timed_out": self.timed_out,
        }


@dataclass
class ResumeState:
    """A run going on after a decision: its nodes' outcomes so far (from its log), the
    decisions not yet acted on, and the approvals still waiting."""

    outcomes: dict[str, dict] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    done_before: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def read_outputs(self, plan: Any) -> None:
        """Each finished node's outputs as the plan's ports (None: it was skipped)."""
        self.done_before = {
            node_id: None
            if outcome.get("skipped")
            else recorded_outputs(plan.nodes[node_id], outcome.get("data"))
            for node_id, outcome in self.outcomes.items()
            if node_id in plan.nodes and "error" not in outcome
        }


def resume_state(run: Run) -> ResumeState:
    outcomes = node_outcomes(run)
    state = ResumeState(outcomes=outcomes)
    for approval in Approval.objects.filter(run=run).select_related("decided_by"):
        if approval.status == ApprovalStatus.PENDING:
            state.pending.add(approval.node_id)
        elif approval.status in (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED):
            if approval.node_id in outcomes:
                continue  # acted on by an earlier resume
            state.decisions[approval.node_id] = Decision(
                approved=approval.status == ApprovalStatus.APPROVED,
                value=approval.decided_value,
                by=approval.decided_by.email if approval.decided_by else None,
                comment=approval.comment,
                edited=approval.decided_value != approval.value,
                timed_out=approval.timed_out,
            )
    return state


def ask_for_approval(run: Run, node_id: str, params: Any, inputs: dict[str, Any]) -> dict:
    """Write the question of `run`'s approval node (once); what `waiting_for_approval`
    says. Called by the executor, off its loop."""
    timeout_at = (
        timezone.now() + timedelta(seconds=params.timeout_seconds)
        if params.timeout_seconds
        else None
    )
    approval, _ = Approval.objects.get_or_create(
        run=run,
        node_id=node_id,
        defaults={
            "workspace_id": run.workspace_id,
            "prompt": params.prompt,
            "role": params.role,
            "allow_edit": params.allow_edit,
            "value": storable(inputs.get("value")),
            "timeout_at": timeout_at,
            "on_timeout": params.on_timeout,
        },
    )
    return question(approval)


def question(approval: Approval) -> dict[str, Any]:
    return {
        "prompt": approval.prompt,
        "value": approval.value,
        "role": approval.role,
        "allow_edit": approval.allow_edit,
        "timeout_at": approval.timeout_at.isoformat() if approval.timeout_at else None,
    }


# --- deciding -----------------------------------------------------------------------------
@transaction.atomic
def approval_decide(
    *,
    workspace: Workspace,
    acting: Membership,
    run_id: Any,
    node_id: str,
    approve: bool,
    value: Any = UNCHANGED,
    comment: str = "",
) -> Approval:
    """Approve (with the value as it came, or edited) or reject a waiting approval of a
    run of this workspace. Audited; the run goes on. PermissionDenied below the node's
    role; ApprovalRefused when there is nothing to decide."""
    run = scoped(Run, workspace).select_for_update().filter(pk=run_id).first()
    approval = (
        Approval.objects.select_for_update().filter(run=run, node_id=node_id).first()
        if run is not None
        else None
    )
    if run is None or approval is None:
        raise ApprovalRefused("not_found", "This run has no such approval.")
    require_role(acting, approval.role)
    if approval.status != ApprovalStatus.PENDING or run.is_finished:
        raise ApprovalRefused("already_decided", "This approval was already decided.")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
        raise ApprovalRefused(
            "invalid_comment", f"A comment is text of at most {MAX_COMMENT_CHARS} characters."
        )
    decided = approval.value
    if value is not UNCHANGED and approve:
        if not approval.allow_edit:
            raise ApprovalRefused("edit_not_allowed", "This approval does not allow editing.")
        decided = storable(value)
        if len(json.dumps(decided, ensure_ascii=False)) > MAX_VALUE_CHARS:
            raise ApprovalRefused(
                "invalid_value", f"The value is at most {MAX_VALUE_CHARS:,} characters as JSON."
            )
    _decide(approval, approve, decided, comment, acting.user, timed_out=False)
    record(
        action="run.approve" if approve else "run.reject",
        workspace=workspace,
        actor=acting.user,
        target=f"run:{run.pk}",
        before={"node": node_id, "value": approval.value},
        after={
            "node": node_id,
            "decision": approval.status,
            "comment": comment,
            "edited": decided != approval.value,
        },
    )
    if run.status == RunStatus.WAITING:
        _requeue(run)
    return approval


def _decide(
    approval: Approval, approve: bool, value: Any, comment: str, user: Any, *, timed_out: bool
) -> None:
    approval.status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    approval.decided_value = value
    approval.comment = comment
    approval.decided_by = user
    approval.decided_at = timezone.now()
    approval.timed_out = timed_out
    approval.save()


def _requeue(run: Run) -> None:
    """Queue a waiting run again (row locked by the caller); its task goes after commit."""
    from runs.services import dispatch  # runs.services imports the engine, which imports us

    run.status = RunStatus.QUEUED
    run.resumed_at = run.dispatched_at = timezone.now()
    run.save(update_fields=["status", "resumed_at", "dispatched_at"])
    run_id = str(run.pk)
    transaction.on_commit(lambda: dispatch(run_id))


def _undone_decisions(run: Run) -> bool:
    finished = RunEvent.objects.filter(run=run, event="node_finished").values("node_id")
    return (
        Approval.objects.filter(
            run=run, status__in=[ApprovalStatus.APPROVED, ApprovalStatus.REJECTED]
        )
        .exclude(node_id__in=finished)
        .exists()
    )


@transaction.atomic
def requeue_if_decided(run_id: str) -> bool:
    """After an execution paused: queue the run again if a decision came meanwhile."""
    run = Run.objects.select_for_update().filter(pk=run_id).first()
    if run is None or run.status != RunStatus.WAITING or not _undone_decisions(run):
        return False
    _requeue(run)
    return True


def expire_approvals(limit: int = 200) -> list[int]:
    """Decide the approvals whose timeout has passed with their `on_timeout` (beat)."""
    due = Approval.objects.filter(
        status=ApprovalStatus.PENDING,
        timeout_at__lt=timezone.now(),
        run__status__in=[RunStatus.WAITING, RunStatus.RUNNING],
    ).values_list("pk", flat=True)[:limit]
    decided = []
    for pk in due:
        with transaction.atomic():
            approval = Approval.objects.select_for_update().filter(pk=pk).first()
            if approval is None or approval.status != ApprovalStatus.PENDING:
                continue
            run = Run.objects.select_for_update().get(pk=approval.run_id)
            approve = approval.on_timeout == "approve"
            _decide(approval, approve, approval.value, "", None, timed_out=True)
            record(
                action="run.approval_timeout",
                workspace=run.workspace,
                target=f"run:{run.pk}",
                after={"node": approval.node_id, "decision": approval.status},
            )
            if run.status == RunStatus.WAITING:
                _requeue(run)
            decided.append(pk)
    return decided


def cancel_approvals(run: Run) -> None:
    """A run that ends while waiting: its questions are void."""
    Approval.objects.filter(run=run, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.CANCELLED
    )


def pending_approvals(workspace: Workspace) -> Any:
    """The workspace's approvals waiting for a decision, oldest first."""
    return (
        scoped(Approval, workspace)
        .filter(
            status=ApprovalStatus.PENDING, run__status__in=[RunStatus.WAITING, RunStatus.RUNNING]
        )
        .select_related("run", "run__flow")
        .order_by("created_at")
    )


def can_decide(membership: Membership, approval: Approval) -> bool:
    """Whether the member may decide it (the node's role, and at least an editor)."""
    return membership.has_role(Role.EDITOR) and membership.has_role(approval.role)
