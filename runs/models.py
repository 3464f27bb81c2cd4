"""Runs and their append-only event log."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from accounts.models import Workspace
from runs.events import LIFECYCLE_EVENTS, wire_message


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    # Paused at a human approval: no lease, no worker, no task (runs.approvals).
    WAITING = "waiting", "Waiting for approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_STATUSES = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
# The `completed` event's status for each terminal run status (docs/protocol.md).
COMPLETED_STATUS = {
    RunStatus.SUCCEEDED: "success",
    RunStatus.FAILED: "error",
    RunStatus.CANCELLED: "cancelled",
}


class Run(models.Model):
    """One execution of one exact flow version.

    Execution is guarded by a lease: a worker claims a queued run by bumping
    `lease_token` (the fencing token) and keeps `lease_expires_at` in the future while it
    works; every event write re-checks the token, so a stale copy of the task (redelivered
    after the broker's visibility timeout) can neither start nor write. The reaper ends runs
    whose lease lapsed.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="runs"
    )
    flow = models.ForeignKey("flows.Flow", on_delete=models.CASCADE, related_name="runs")
    flow_version = models.ForeignKey(
        "flows.FlowVersion", on_delete=models.PROTECT, related_name="runs"
    )
    session_id = models.CharField(max_length=64, db_index=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="runs"
    )
    inputs = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rerun_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reruns"
    )
    # Re-run from a node: nodes outside this node's downstream reuse `rerun_of`'s outputs.
    rerun_from_node = models.CharField(max_length=100, blank=True)
    # The API key the run was started with (usage and budgets per key); empty otherwise.
    api_token = models.ForeignKey(
        "accounts.ApiToken", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Execution bookkeeping.
    task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_token = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    # The broker refused the run's task when it was queued: the reaper hands it over again.
    dispatch_pending = models.BooleanField(default=False)
    # When its task was last handed to the broker again (empty: only when it was created).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # When it was queued again after a human approval (the queue timeout counts from then).
    resumed_at = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "-created_at"], name="run_ws_created"),
            models.Index(fields=["workspace", "status"], name="run_ws_status"),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class RunEvent(models.Model):
    """One event of a run, numbered 1..N without gaps. Never updated or deleted."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, db_index=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    event = models.CharField(max_length=32)
    node_id = models.CharField(max_length=100, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    ts = models.DateTimeField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="runevent_run_seq")]
        indexes = [
            # Partial: only the few lifecycle rows of a run (never its tokens), so the admin
            # timeline and run comparisons read a handful of index entries, not the whole
            # log, and token inserts pay nothing for it. Queries must repeat the condition.
            # (run, event) narrows it further; node_id and ts make the timeline aggregate
            # index-only.
            models.Index(
                fields=["run", "event", "node_id", "ts"],
                name="runevent_lifecycle",
                condition=models.Q(event__in=LIFECYCLE_EVENTS),
            )
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.event}"

    def as_message(self) -> dict:
        """The wire form (docs/protocol.md): {event, run_id, seq, node_id, ts, ...payload}."""
        return wire_message(
            self.event, str(self.run_id), self.seq, self.node_id, self.ts, self.payload
        )


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"


class Approval(models.Model):
    """What a run's approval node asks (flows.components.approval), and the decision.

    Made when the run reaches the node (pending); decided once, by a member with `role` or
    above, or by the timeout (`decided_by` empty, `timed_out`); cancelled with its run.
    `value` is what the node received; `decided_value` what goes on (edited or not).
    """

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    node_id = models.CharField(max_length=100)
    prompt = models.TextField()
    role = models.CharField(max_length=10)
    allow_edit = models.BooleanField(default=True)
    value = models.JSONField(null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    timeout_at = models.DateTimeField(null=True, blank=True, db_index=True)
    on_timeout = models.CharField(max_length=10, default="reject")
    decided_value = models.JSONField(null=True, blank=True)
    comment = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    timed_out = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["run", "node_id"], name="approval_unique_run_node")
        ]
        indexes = [models.Index(fields=["workspace", "status"], name="approval_ws_status")]

    def __str__(self) -> str:
        return f"approval {self.node_id} of {self.run_id} ({self.status})"
