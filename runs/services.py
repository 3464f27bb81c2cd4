"""Writes for runs: start, claim (lease), cancel, and ending runs whose worker is gone."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from kombu.exceptions import ChannelError

from accounts.models import ApiToken, Membership, Role, Workspace
from accounts.tenancy import get_scoped, require_role, scoped
from audit.services import record
from config.celery import app as celery_app
from config.counters import count_up
from config.errors import SERVICE_UNAVAILABLE
from flows import services as flow_services
from flows.builder import GraphInvalid, build_plan
from flows.models import Flow, FlowVersion
from runs.budgets import tokens_left
from runs.engine.publisher import publish_committed
from runs.engine.rerun import RerunImpossible, recorded_for_rerun
from runs.events import session_group
from runs.finished import announce_finished
from runs.models import COMPLETED_STATUS, TERMINAL_STATUSES, Run, RunEvent, RunStatus
from runs.selectors import node_outcomes

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_INPUT_CHARS = 100_000
QUEUE_TIMEOUT = timedelta(minutes=30)


class RunRefused(Exception):
    """A run request that cannot be honoured; `code` and `message` go to the client."""

    def __init__(self, code: str, message: str, problems: list[dict] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems or []

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.problems:
            body["problems"] = self.problems
        return body


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


def clean_session_id(value: Any) -> str:
    if not isinstance(value, str) or not SESSION_ID_RE.match(value):
        raise RunRefused("invalid_session", "A session id is 1-64 letters, digits, - or _.")
    return value


# --- starting ---------------------------------------------------------------------------


def _check_limits(
    workspace: Workspace,
    acting: Membership,
    api_token: ApiToken | None = None,
    rate: tuple[str, int] | None = None,
) -> None:
    limits = settings.FLOWDECK
    active = scoped(Run, workspace).filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
    if active.count() >= limits["MAX_CONCURRENT_RUNS_PER_WORKSPACE"]:
        raise RunRefused(
            "too_many_runs",
            f"This workspace already has {limits['MAX_CONCURRENT_RUNS_PER_WORKSPACE']} runs "
            "in progress; wait for one to finish.",
        )
    left = tokens_left(workspace.pk, api_token.pk if api_token else None)
    if left is not None and left <= 0:
        raise RunRefused(
            "budget_exceeded",
            "This workspace or API key has used its monthly budget; an admin can raise it.",
        )
    minute = int(timezone.now().timestamp() // 60)
    subject, per_minute = rate or (f"u:{acting.user_id}", limits["RUNS_PER_MINUTE_PER_USER"])
    counts = count_up([f"runrate:{subject}:{minute}", f"runrate:w:{workspace.pk}:{minute}"])
    if counts[0] > per_minute or counts[1] > limits["RUNS_PER_MINUTE_PER_WORKSPACE"]:
        raise RunRefused("rate_limited", "Too many runs started in the last minute.")


def _clean_inputs(inputs: Any, input_node_ids: list[str]) -> dict[str, str]:
    """Map inputs to input node ids; `{"input": text}` is shorthand for a one-input flow."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise RunRefused("invalid_inputs", "`inputs` must be an object of node id -> text.")
    if set(inputs) == {"input"} and "input" not in input_node_ids and len(input_node_ids) == 1:
        inputs = {input_node_ids[0]: inputs["input"]}
    cleaned: dict[str, str] = {}
    for key, value in inputs.items():
        if key not in input_node_ids:
            raise RunRefused("invalid_inputs", f"`{str(key)[:100]}` is not an input node.")
        if not isinstance(value, str) or len(value) > MAX_INPUT_CHARS:
            raise RunRefused(
                "invalid_inputs", f"Input `{key}` must be text of at most {MAX_INPUT_CHARS} chars."
            )
        cleaned[key] = value
    return cleaned


def _checked_plan(graph: Any, workspace: Workspace) -> Any:
    """The graph's execution plan (no objects built), or RunRefused with every problem."""
    try:
        return build_plan(graph, workspace, build_objects=False)
    except GraphInvalid as exc:
        raise RunRefused(
            "invalid_graph", "The flow is not valid.", [p.as_dict() for p in exc.problems]
        ) from exc


@transaction.atomic
def run_start(
    *,
    workspace: Workspace,
    acting: Membership,
    session_id: str,
    flow: Flow | None = None,
    version_number: int | None = None,
    graph: dict | None = None,
    inputs: Any = None,
    rerun_of: Run | None = None,
    rerun_from_node: str = "",
    api_token: ApiToken | None = None,
    rate: tuple[str, int] | None = None,
) -> Run:
    """Queue a run of a saved version, or of an unsaved graph (saved as a draft version).

    `rate` (counter name, runs per minute) replaces the starting member's own per-minute
    limit: an embed's runs count against the embed, not against the member who made it."""
    require_role(acting, Role.EDITOR)
    session_id = clean_session_id(session_id)
    if graph is not None:
        plan = _checked_plan(graph, workspace)  # before anything is written
        if flow is None:
            flow = flow_services.scratch_flow_for(workspace=workspace, user=acting.user)
        version = flow_services.flow_version_create(
            flow=flow, graph=graph, acting=acting.user, note="run from editor", is_draft=True
        )
    else:
        if flow is None:
            raise RunRefused("invalid_request", "Name a flow or send a graph.")
        versions = scoped(FlowVersion, workspace).filter(flow=flow)
        if version_number is not None:
            found = versions.filter(number=version_number).first()
        else:
            found = versions.order_by("-number").first()
        if found is None:
            raise RunRefused("not_found", "That flow has no such version.")
        version = found
        plan = _checked_plan(version.graph, workspace)  # the whitelist may have changed
    cleaned = _clean_inputs(inputs, list(plan.input_node_ids))
    _check_limits(workspace, acting, api_token, rate)
    run = Run.objects.create(
        workspace=workspace,
        flow_id=version.flow_id,
        flow_version=version,
        session_id=session_id,
        started_by=acting.user,
        inputs=cleaned,
        rerun_of=rerun_of,
        rerun_from_node=rerun_from_node,
        api_token=api_token,
    )
    record(
        action="run.rerun" if rerun_of else "run.start",
        workspace=workspace,
        actor=acting.user,
        target=f"run:{run.pk}",
        after={
            "flow": version.flow_id,
            "version": version.number,
            "draft": version.is_draft,
            "rerun_of": str(rerun_of.pk) if rerun_of else None,
            "rerun_from_node": rerun_from_node or None,
        },
    )
    transaction.on_commit(lambda: dispatch(str(run.pk)))
    log.info("run queued", extra={"run": str(run.pk), "workspace": workspace.slug})
    return run


def dispatch(run_id: str) -> bool:
    """Hand a committed run to the workers; whether the broker took it.

    A run that was accepted stays accepted: if the broker is unreachable, the run stays
    queued and is flagged, and the reaper hands it over again once the broker is back (a
    second copy of the task is harmless: the claim is fenced). A run that cannot even be
    flagged ends by the queue timeout.
    """
    if _send(run_id):
        return True
    try:
        Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(dispatch_pending=True)
    except SERVICE_UNAVAILABLE as exc:
        log.error("could not flag run %s for dispatch: %r", run_id, exc)
    return False


def dispatch_pending_runs(limit: int = 500) -> list[str]:
    """Hand over again the queued runs whose task the broker refused; stops at the first
    refusal (the broker is still away)."""
    sent = []
    pending = Run.objects.filter(status=RunStatus.QUEUED, dispatch_pending=True)
    for pk in pending.order_by("created_at").values_list("pk", flat=True)[:limit]:
        if not _send(str(pk)):
            break
        Run.objects.filter(pk=pk).update(dispatch_pending=False, dispatched_at=timezone.now())
        sent.append(str(pk))
    return sent


def _send(run_id: str) -> bool:
    # Imported here: runs.tasks imports the executor, which imports this module.
    from runs.tasks import execute_run

    try:
        execute_run.delay(run_id)
        return True
    except SERVICE_UNAVAILABLE as exc:
        log.warning("the broker refused run %s: %r", run_id, exc)
        return False


def _broker_queue_length() -> int | None:
    """Tasks waiting in the run queue of the broker, or None if it cannot be asked."""
    try:
        with celery_app.connection_for_write() as connection:
            queue = settings.CELERY_TASK_DEFAULT_QUEUE
            try:
                declared = connection.default_channel.queue_declare(queue, passive=True)  # type: ignore[attr-defined]  # celery-types' StdChannel lacks queue_declare, which every kombu transport's channel has
            except ChannelError:
                return 0  # no such queue: a broker that restarted empty holds nothing
            return int(declared.message_count)
    except Exception as exc:  # unreachable, or a transport that cannot count
        log.warning("could not measure the broker's run queue: %r", exc)
        return None


def redispatch_lost_runs(limit: int = 500) -> list[str]:
    """Send again the queued runs whose task the broker lost (a broker Redis restarted
    without persistence drops every waiting task, and those runs would otherwise wait for
    the queue timeout).

    A run counts as waiting once its task has been in the broker longer than
    REDISPATCH_SECONDS; when the broker's run queue holds fewer tasks than there are such
    runs, the oldest of them are sent again (a backlog of tasks that are all still queued
    is not duplicated). A run sent twice is still run once: its claim is fenced.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.FLOWDECK["REDISPATCH_SECONDS"])
    waiting = Run.objects.filter(status=RunStatus.QUEUED, dispatch_pending=False).filter(
        Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True, created_at__lt=cutoff)
    )
    count = waiting.count()
    if not count:
        return []
    in_broker = _broker_queue_length()
    if in_broker is None or in_broker >= count:
        return []
    sent = []
    lost = waiting.order_by("created_at").values_list("pk", flat=True)[
        : min(count - in_broker, limit)
    ]
    for pk in lost:
        if not _send(str(pk)):
            break
        Run.objects.filter(pk=pk).update(dispatched_at=timezone.now())
        sent.append(str(pk))
    if sent:
        log.warning("sent lost runs again", extra={"runs": sent, "in_broker": in_broker})
    return sent


def run_rerun(
    *,
    workspace: Workspace,
    acting: Membership,
    run: Run,
    session_id: str,
    from_node: str | None = None,
) -> Run:
    """The same version with the same inputs, as a new run linked to the original.

    With `from_node`, only that node and what depends on it execute again: every other
    node takes its recorded output from the original run's log.
    """
    if from_node:
        if not run.is_finished:
            raise RunRefused("not_finished", "Re-run from a node needs a finished run.")
        _check_rerun_from(run, from_node)
    rerun = run_start(
        workspace=workspace,
        acting=acting,
        session_id=session_id,
        flow=run.flow,
        version_number=run.flow_version.number,
        inputs=run.inputs,
        rerun_of=run,
        rerun_from_node=from_node or "",
    )
    return rerun


def _check_rerun_from(run: Run, node_id: str) -> None:
    """RunRefused unless every node outside `node_id`'s downstream has a recorded output
    in `run`'s log (the same rule the executor applies: runs.engine.rerun)."""
    plan = _checked_plan(run.flow_version.graph, run.workspace)
    try:
        recorded_for_rerun(plan, node_id, node_outcomes(run))
    except RerunImpossible as exc:
        raise RunRefused("invalid_node", str(exc)) from exc


# --- executing --------------------------------------------------------------------------


def run_claim(*, run_id: str, task_id: str, worker: str) -> Run | None:
    """Take the lease of a queued run, or None if it is not queued (finished, or held).

    One conditional UPDATE moves the run out of `queued` and bumps the fencing token, so a
    duplicate delivery of the task finds nothing to do, and a run whose worker died is
    never started twice: the reaper ends it instead. Then one read loads the run with its
    workspace and flow version. (Nothing changes the token between the two: the reaper
    takes only lapsed leases, and this one was just set `RUN_LEASE_SECONDS` ahead.)
    """
    now = timezone.now()
    claimed = Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING,
        # A run resumed after an approval keeps the time it first started.
        started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
        lease_expires_at=now + timedelta(seconds=settings.FLOWDECK["RUN_LEASE_SECONDS"]),
        task_id=task_id[:64],
        worker=worker[:200],
        attempts=F("attempts") + 1,
        lease_token=F("lease_token") + 1,
    )
    if not claimed:
        return None
    try:
        return Run.objects.select_related("workspace", "flow_version").get(pk=run_id)
    except Run.DoesNotExist:  # deleted with its workspace meanwhile
        return None


@transaction.atomic
def run_cancel(*, workspace: Workspace, acting: Membership, run: Run) -> Run:
    """Cancel: a queued run ends at once; a running one stops at its next check."""
    require_role(acting, Role.EDITOR)
    run = scoped(Run, workspace).select_for_update().get(pk=run.pk)
    record(
        action="run.cancel",
        workspace=workspace,
        actor=acting.user,
        target=f"run:{run.pk}",
        before={"status": run.status},
    )
    if run.status == RunStatus.QUEUED:
        return _end_run(run, RunStatus.CANCELLED, "Cancelled before it started.")
    if run.status == RunStatus.WAITING:  # no worker holds it: it ends here
        from runs.approvals import cancel_approvals  # runs.approvals imports this module

        cancel_approvals(run)
        return _end_run(run, RunStatus.CANCELLED, "Cancelled while waiting for approval.")
    if run.status == RunStatus.RUNNING and not run.cancel_requested:
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested"])
    return run


def _end_run(run: Run, status: RunStatus, reason: str) -> Run:
    """End a run that no live writer holds (call inside a transaction, row locked).

    Bumps the fencing token first, so a writer that wakes up later cannot append.
    """
    now = timezone.now()
    seq = run.last_seq
    events = []
    if status != RunStatus.CANCELLED:
        seq += 1
        events.append(
            RunEvent(
                workspace=run.workspace,
                run=run,
                seq=seq,
                event="error",
                node_id="",
                payload={"message": reason},
                ts=now,
            )
        )
    seq += 1
    events.append(
        RunEvent(
            workspace=run.workspace,
            run=run,
            seq=seq,
            event="completed",
            node_id="",
            payload={"status": COMPLETED_STATUS[status]},
            ts=now,
        )
    )
    RunEvent.objects.bulk_create(events)
    run.status = status
    run.error = reason if status != RunStatus.CANCELLED else ""
    run.finished_at = now
    run.last_seq = seq
    run.lease_token += 1
    run.lease_expires_at = None
    run.save(
        update_fields=[
            "status",
            "error",
            "finished_at",
            "last_seq",
            "lease_token",
            "lease_expires_at",
        ]
    )
    messages = [e.as_message() for e in events]
    group = session_group(run.workspace_id, run.session_id)
    transaction.on_commit(lambda: publish_committed(group, messages))
    return run


@transaction.atomic
def run_replayed(*, workspace: Workspace, acting: Membership, run: Run) -> None:
    """A member played a finished run back: nothing changes but the audit trail."""
    record(action="run.replay", workspace=workspace, actor=acting.user, target=f"run:{run.pk}")


@transaction.atomic
def run_watched(*, workspace: Workspace, acting: Membership, run: Run) -> None:
    """A member started following another member's run (audited; one's own is not)."""
    if run.started_by_id != acting.user_id:
        record(
            action="run.watch",
            workspace=workspace,
            actor=acting.user,
            target=f"run:{run.pk}",
            after={"live": not run.is_finished},
        )


def reap_stale_runs() -> list[str]:
    """End runs whose worker stopped heartbeating, and runs queued for far too long."""
    now = timezone.now()
    stale = Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    # A run queued again after an approval counts from then (`resumed_at`).
    cutoff = now - QUEUE_TIMEOUT
    queued = Run.objects.filter(status=RunStatus.QUEUED, created_at__lt=cutoff).filter(
        Q(resumed_at__isnull=True) | Q(resumed_at__lt=cutoff)
    )
    candidates = list(stale.values_list("pk", flat=True)) + list(
        queued.values_list("pk", flat=True)
    )
    reaped = [str(pk) for pk in candidates if reap_run(pk)]
    if reaped:
        log.warning("reaped stale runs", extra={"runs": reaped})
    for run_id in reaped:
        # What the lost worker had logged is charged (its nodes' usage), as for any end.
        announce_finished(run_id)
    return reaped


def reap_run(pk: Any) -> bool:
    """End one run if its lease has lapsed (or it waited too long in the queue)."""
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=pk).first()
        if run is None or run.status in TERMINAL_STATUSES:
            return False
        if run.status == RunStatus.RUNNING:
            if run.lease_expires_at is None or run.lease_expires_at >= now:
                return False  # a heartbeat arrived meanwhile
            reason = "The worker running this flow stopped responding (lost or killed)."
        elif run.status == RunStatus.QUEUED and (run.resumed_at or run.created_at) < (
            now - QUEUE_TIMEOUT
        ):
            reason = "No worker picked this run up in time."
        else:
            return False
        _end_run(run, RunStatus.FAILED, reason)
        return True


def run_for(workspace: Workspace, run_id: Any) -> Run:
    """A run of this workspace, or Http404."""
    return get_scoped(Run, workspace, pk=run_id)
