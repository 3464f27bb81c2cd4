"""Celery tasks: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from runs.approvals import expire_approvals
from runs.engine.executor import execute_queued_run
from runs.services import dispatch_pending_runs, redispatch_lost_runs
from runs.services import reap_stale_runs as reap


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, bind=True)
def execute_run(self, run_id: str) -> None:  # noqa: ANN001 (celery's bound task)
    """Execute a queued run. A duplicate or late delivery finds the run claimed and exits."""
    execute_queued_run(
        run_id=run_id, task_id=self.request.id or "", worker=self.request.hostname or ""
    )


@shared_task(ignore_result=True)
def reap_stale_runs() -> int:
    """Every few seconds (beat): end runs whose worker was lost, hand over again the runs
    the broker refused when they were queued or lost afterwards, and decide the approvals
    whose timeout has passed."""
    expire_approvals()
    dispatch_pending_runs()
    redispatch_lost_runs()
    return len(reap())
