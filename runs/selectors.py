"""Reads for runs and their event logs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import BooleanField, Count, Max, Min, OuterRef, QuerySet, Subquery
from django.db.models.expressions import RawSQL

from accounts.models import Workspace
from accounts.tenancy import scoped
from flows.models import Flow
from runs.events import LIFECYCLE_EVENTS, NODE_RESULT_EVENTS
from runs.models import TERMINAL_STATUSES, Run, RunEvent

EVENT_PAGE = 1000


def runs_for_workspace(workspace: Workspace, *, flow_id: int | None = None) -> QuerySet[Run]:
    runs = scoped(Run, workspace).select_related("flow", "flow_version", "started_by")
    if flow_id is not None:
        runs = runs.filter(flow_id=flow_id)
    return runs.order_by("-created_at")


def previous_run(run: Run) -> Run | None:
    """The run of the same flow started just before `run` (to compare with), if any."""
    earlier = scoped(Run, run.workspace).filter(flow_id=run.flow_id, created_at__lt=run.created_at)
    return earlier.order_by("-created_at").first()


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


def run_log_complete(workspace: Workspace, run_id: str, after_seq: int) -> bool:
    """Whether a reader holding every event up to `after_seq` has the whole log: the run has
    ended and logged nothing later (an EventSource reconnecting after `completed`)."""
    return (
        scoped(Run, workspace)
        .filter(pk=run_id, status__in=TERMINAL_STATUSES, last_seq__lte=after_seq)
        .exists()
    )


def run_has_ended(workspace: Workspace, run_id: str) -> bool:
    """Whether the run is in a terminal state (its `completed` event is in the log)."""
    return scoped(Run, workspace).filter(pk=run_id, status__in=TERMINAL_STATUSES).exists()


def node_outcomes(run: Run) -> dict[str, dict]:
    """Per node of a finished run: its `node_finished` payload, or {"error": message}."""
    outcomes: dict[str, dict] = {}
    events = (
        scoped(RunEvent, run.workspace)
        .filter(run=run, event__in=["node_finished", "error"])
        .exclude(node_id="")
    )
    for node_id, event, payload in events.order_by("seq").values_list(
        "node_id", "event", "payload"
    ):
        if event == "error":
            outcomes[node_id] = {"error": payload.get("message", "")}
        else:
            outcomes.setdefault(node_id, payload)
    return outcomes


@dataclass(frozen=True)
class RecordedNode:
    """What one node of a run did, as its log recorded it (a pinned node's source)."""

    run_id: str
    component: str  # the node's component key in the version that run ran
    finished: dict[str, Any]  # its `node_finished` payload


def recorded_node(workspace: Workspace, run_id: object, node_id: str) -> RecordedNode | None:
    """Node `node_id` of run `run_id` of `workspace`, when it finished there with an output
    (not skipped); None when the run is not this workspace's (or not a run id), or the node
    failed, was skipped or never ran in it."""
    try:
        run_uuid = uuid.UUID(str(run_id))
    except ValueError:
        return None
    run = scoped(Run, workspace).filter(pk=run_uuid).select_related("flow_version").first()
    if run is None:
        return None
    payload = (
        _lifecycle(scoped(RunEvent, workspace).filter(run=run, event="node_finished"))
        .filter(node_id=node_id)
        .values_list("payload", flat=True)
        .first()
    )
    if not isinstance(payload, dict) or payload.get("skipped"):
        return None
    nodes = (run.flow_version.graph or {}).get("nodes") or []
    component = next(
        (str(n.get("component")) for n in nodes if isinstance(n, dict) and n.get("id") == node_id),
        "",
    )
    return RecordedNode(run_id=str(run.pk), component=component, finished=payload)


# --- Review: the admin run page, its timeline, and comparing a re-run with its original ---

MAX_TOOL_MARKS = 500


# RunEvent's partial index condition as literal SQL. A planner (SQLite's above all) uses a
# partial index only when the query repeats its condition with the same constants, which a
# parameterised `event__in` does not. The constants are ours, never user input.
_LIFECYCLE_CONDITION = RawSQL(  # noqa: S611
    '"runs_runevent"."event" IN (' + ", ".join(f"'{e}'" for e in LIFECYCLE_EVENTS) + ")",
    [],
    output_field=BooleanField(),
)


def _lifecycle(events: QuerySet[RunEvent]) -> QuerySet[RunEvent]:
    """Only the lifecycle rows, read through the partial index."""
    return events.filter(_LIFECYCLE_CONDITION)


@dataclass(frozen=True)
class NodeSpan:
    """One node's bar on a run's timeline (times in seconds from the run's first event)."""

    node_id: str
    start: float
    end: float
    finished: bool
    failed: bool
    tool_calls: int


@dataclass(frozen=True)
class ToolMark:
    node_id: str
    at: float
    seq: int
    tool_name: str


@dataclass(frozen=True)
class Timeline:
    spans: list[NodeSpan]
    marks: list[ToolMark]
    total: float  # seconds from the first to the last timed event
    marks_truncated: bool


def _seconds(ts: datetime | None, origin: datetime) -> float:
    return (ts - origin).total_seconds() if ts is not None else 0.0


def run_timeline(run: Run) -> Timeline:
    """Where a run's time went, one bar per node, from two bounded queries.

    The bars come from ONE aggregate (first/last ts per node and event type), so a run with
    100,000 token events costs one grouped scan, not 100,000 rows in Python. Tool-call marks
    are individual rows, capped at MAX_TOOL_MARKS.
    """
    # By run alone: `run` is a row already fetched through its workspace, and a second
    # (workspace) condition would lure SQLite's planner onto the workspace index.
    lifecycle = _lifecycle(RunEvent.objects.filter(run=run))
    rows = list(
        lifecycle.values("node_id", "event")
        .annotate(first=Min("ts"), last=Max("ts"), n=Count("id"))
        .order_by()
    )
    if not rows:
        return Timeline([], [], 0.0, False)
    origin = min(r["first"] for r in rows)
    end_of_run = max(r["last"] for r in rows)
    by_node: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        if r["node_id"]:
            by_node.setdefault(r["node_id"], {})[r["event"]] = r
    spans = []
    for node_id, events in by_node.items():
        started = events.get("node_started")
        if started is None:
            continue
        finished = events.get("node_finished")
        failed = events.get("error")
        ends = [e["last"] for e in (finished, failed) if e is not None]
        spans.append(
            NodeSpan(
                node_id=node_id,
                start=_seconds(started["first"], origin),
                end=_seconds(max(ends) if ends else end_of_run, origin),
                finished=finished is not None,
                failed=failed is not None,
                tool_calls=events.get("on_tool_call", {}).get("n", 0),
            )
        )
    spans.sort(key=lambda s: (s.start, s.node_id))
    # In the partial index's own order (no sort over the run's whole log), then by seq.
    tool_rows = sorted(
        lifecycle.filter(event="on_tool_call")
        .order_by("node_id", "ts")
        .values_list("seq", "node_id", "ts", "payload")[: MAX_TOOL_MARKS + 1]
    )
    marks = [
        ToolMark(
            node_id=node_id,
            at=_seconds(ts, origin),
            seq=seq,
            tool_name=str(((payload or {}).get("data") or {}).get("tool_name", ""))[:100]
            if isinstance((payload or {}).get("data"), dict)
            else "",
        )
        for seq, node_id, ts, payload in tool_rows[:MAX_TOOL_MARKS]
    ]
    return Timeline(spans, marks, _seconds(end_of_run, origin), len(tool_rows) > MAX_TOOL_MARKS)


@dataclass(frozen=True)
class EventPage:
    events: list[RunEvent]
    after: int  # the page shows seq > after
    next_after: int | None  # None: this is the last page (so far)
    prev_after: int | None  # None: this is the first page


def run_event_page(run: Run, *, after: int = 0, size: int = 100) -> EventPage:
    """One page of a run's log by keyset (seq > after) — one indexed range read, no COUNT."""
    after = max(0, after)
    # By run alone (an already scoped row): the (run, seq) unique index is then the only
    # sensible plan, even before the planner has statistics for a freshly loaded log.
    rows = list(RunEvent.objects.filter(run=run, seq__gt=after).order_by("seq")[: size + 1])
    events = rows[:size]
    next_after = events[-1].seq if len(rows) > size else None
    # seq has no gaps (docs/protocol.md), so the previous page starts `size` earlier.
    prev_after = max(0, after - size) if after > 0 else None
    return EventPage(events, after, next_after, prev_after)


MAX_RESULT_EVENTS = 5000


@dataclass
class NodeResult:
    """What one node did in one run, from its log."""

    status: str = "not run"  # not run | running | finished | skipped | error
    output: Any = None
    duration_ms: float | None = None
    errors: list[str] = field(default_factory=list)
    # What its policy did (flows.policy): each retry, and an error port or fallback taken.
    notes: list[str] = field(default_factory=list)


@dataclass
class NodeComparison:
    node_id: str
    component: str
    a: NodeResult
    b: NodeResult

    @property
    def same_output(self) -> bool:
        return self.a.status == self.b.status and self.a.output == self.b.output


def _node_results(events: list[tuple[str, str, dict]]) -> dict[str, NodeResult]:
    results: dict[str, NodeResult] = {}
    for event, node_id, payload in events:
        if not node_id:
            continue
        result = results.setdefault(node_id, NodeResult())
        payload = payload or {}
        if event == "node_started" and result.status == "not run":
            result.status = "running"
        elif event == "node_finished":
            result.status = "skipped" if payload.get("skipped") else "finished"
            result.output = payload.get("data")
            result.duration_ms = payload.get("duration_ms")
            if payload.get("took"):
                took = "its error port" if payload["took"] == "error_port" else "its fallback"
                failure = payload.get("failure") or {}
                result.notes.append(f"took {took} after: {failure.get('message', '')}"[:500])
        elif event == "node_retry":
            result.notes.append(
                f"attempt {payload.get('attempt')} of {payload.get('of')} after: "
                f"{payload.get('error', '')}"[:500]
            )
        elif event == "error":
            result.status = "error"
            result.errors.append(str(payload.get("message", ""))[:2000])
    return results


def compare_runs(workspace: Workspace, run_a: Run, run_b: Run) -> list[NodeComparison]:
    """Two runs of a workspace side by side, node by node (outputs, durations, errors).

    One query reads only the node lifecycle events of both runs (never their tokens);
    nodes appear in the order of run_a's graph, then any only run_b's graph has.
    """
    for run in (run_a, run_b):
        if run.workspace_id != workspace.pk:
            raise ValueError("compare_runs() takes runs of the given workspace")
    rows = (
        scoped(RunEvent, workspace)
        .filter(run_id__in=[run_a.pk, run_b.pk], event__in=NODE_RESULT_EVENTS)
        .filter(_LIFECYCLE_CONDITION)
        .order_by("run_id", "event", "node_id", "ts")  # the partial index's order: no sort
        .values_list("run_id", "seq", "event", "node_id", "payload")[:MAX_RESULT_EVENTS]
    )
    per_run: dict[Any, list[tuple[str, str, dict]]] = {run_a.pk: [], run_b.pk: []}
    for run_id, _seq, event, node_id, payload in sorted(rows, key=lambda r: (str(r[0]), r[1])):
        per_run[run_id].append((event, node_id, payload))
    results_a = _node_results(per_run[run_a.pk])
    results_b = _node_results(per_run[run_b.pk])
    components: dict[str, str] = {}
    for run in (run_a, run_b):
        for node in (run.flow_version.graph or {}).get("nodes", []):
            if isinstance(node, dict) and "id" in node:
                components.setdefault(str(node["id"]), str(node.get("component", "")))
    for node_id in list(results_a) + list(results_b):
        components.setdefault(node_id, "")
    return [
        NodeComparison(
            node_id=node_id,
            component=component,
            a=results_a.get(node_id, NodeResult()),
            b=results_b.get(node_id, NodeResult()),
        )
        for node_id, component in components.items()
    ]


@dataclass(frozen=True)
class RunSummary:
    """What a list of flows shows of a flow's latest run."""

    id: Any
    status: str
    created_at: datetime


def last_runs(workspace: Workspace, flow_ids: list[int]) -> dict[int, RunSummary]:
    """The latest run of each of these flows of `workspace` that has one (one query)."""
    latest = scoped(Run, workspace).filter(flow=OuterRef("pk")).order_by("-created_at")
    rows = (
        scoped(Flow, workspace)
        .filter(pk__in=flow_ids)
        .annotate(
            run_id=Subquery(latest.values("pk")[:1]),
            run_status=Subquery(latest.values("status")[:1]),
            run_at=Subquery(latest.values("created_at")[:1]),
        )
        .filter(run_id__isnull=False)
        .values_list("pk", "run_id", "run_status", "run_at")
    )
    return {pk: RunSummary(run_id, status, at) for pk, run_id, status, at in rows}


@dataclass(frozen=True)
class RunUsage:
    """A run's model usage as its log reports it: each node's `node_finished` usage, or
    the `budget_exceeded` usage of a node the budget stopped."""

    nodes: dict[str, dict[str, Any]]
    input_tokens: int
    output_tokens: int


def run_usage(run: Run) -> RunUsage:
    """The usage each node of `run` reported, and the totals. Only counts that are
    non-negative integers count (the log is JSON: nothing else is trusted to add up)."""
    nodes: dict[str, dict[str, Any]] = {}
    finished = RunEvent.objects.filter(
        run=run, event__in=("node_finished", "budget_exceeded")
    ).order_by("seq")
    for node_id, payload in finished.values_list("node_id", "payload"):
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if not isinstance(usage, dict):
            continue
        nodes[node_id] = {
            "input_tokens": _count(usage.get("input_tokens")),
            "output_tokens": _count(usage.get("output_tokens")),
            "model": model[:200] if isinstance(model := usage.get("model"), str) else "",
        }
    return RunUsage(
        nodes=nodes,
        input_tokens=sum(u["input_tokens"] for u in nodes.values()),
        output_tokens=sum(u["output_tokens"] for u in nodes.values()),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
