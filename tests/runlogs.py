"""Finished runs with a stored event log, made directly with the ORM (no live processes)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from accounts.models import ApiToken, Membership, User, Workspace
from flows.models import Flow
from flows.services import flow_create
from runs.models import Run, RunEvent, RunStatus
from tests.flowgraphs import demo_graph

NODES = ("input", "model", "output")


def make_flow(workspace: Workspace, owner: User, name: str = "support bot") -> Flow:
    acting = Membership.objects.get(workspace=workspace, user=owner)
    return flow_create(
        workspace=workspace,
        acting=acting,
        name=name,
        graph=demo_graph(reply="hello there", delay_ms=0),
    )


def log_events(
    *,
    tokens: int = 3,
    tool_calls: int = 0,
    reply: str = "hello there",
    fail_output: bool = False,
    step_ms: int = 1,
    start: datetime | None = None,
) -> list[dict[str, Any]]:
    """A plausible log for input -> model -> output: seq, event, node_id, payload, ts."""
    t = start or timezone.now() - timedelta(hours=1)
    rows: list[dict[str, Any]] = []

    def add(event: str, node_id: str = "", **payload: Any) -> None:
        nonlocal t
        t += timedelta(milliseconds=step_ms)
        rows.append(
            {"seq": len(rows) + 1, "event": event, "node_id": node_id, "payload": payload, "ts": t}
        )

    add("run_started", data={"flow": 1, "version": 1, "inputs": {"input": "hi"}, "protocol": 1})
    add("node_started", "input", data={"component": "io.chat_input"})
    add("node_finished", "input", data="hi", duration_ms=1)
    add("node_started", "model", data={"component": "llm.demo"})
    for i in range(tool_calls):
        call = {"tool_name": "calculator", "tool_input": {"expression": "1+1"}, "call_id": f"c{i}"}
        add("on_tool_call", "model", data=call)
        add(
            "on_tool_result",
            "model",
            data={"call_id": f"c{i}", "tool_name": "calculator", "output": "2"},
        )
    for i in range(tokens):
        add("on_token", "model", data=f"tok{i} ")
    add("node_finished", "model", data=reply, duration_ms=tokens * step_ms + 5)
    add("node_started", "output", data={"component": "io.text_output"})
    if fail_output:
        add("error", "output", message="output exploded")
        add("completed", status="error")
    else:
        add("node_finished", "output", data=reply, duration_ms=1)
        add("completed", status="success")
    return rows


def make_run(
    workspace: Workspace,
    owner: User,
    *,
    flow: Flow | None = None,
    rerun_of: Run | None = None,
    **log: Any,
) -> Run:
    """A finished run of `flow` (a fresh demo flow by default) with its whole log."""
    flow = flow or make_flow(workspace, owner)
    rows = log_events(**log)
    failed = log.get("fail_output", False)
    run = Run.objects.create(
        workspace=workspace,
        flow=flow,
        flow_version=flow.versions.order_by("-number").first(),
        session_id="tests",
        started_by=owner,
        inputs={"input": "hi"},
        outputs={} if failed else {"output": log.get("reply", "hello there")},
        status=RunStatus.FAILED if failed else RunStatus.SUCCEEDED,
        error="output exploded" if failed else "",
        started_at=rows[0]["ts"],
        finished_at=rows[-1]["ts"],
        last_seq=len(rows),
        rerun_of=rerun_of,
    )
    RunEvent.objects.bulk_create(
        [RunEvent(workspace=workspace, run=run, **row) for row in rows], batch_size=2000
    )
    return run


def used_run(
    flow: Flow,
    user: User,
    usage: dict[str, Any] | None,
    *,
    event: str = "node_finished",
    api_token: ApiToken | None = None,
) -> Run:
    """A finished run of `flow` (version 1) whose log is one event of its node "model":
    `usage` is what the provider reported, as `node_finished` carries it (None: nothing)."""
    run = Run.objects.create(
        workspace=flow.workspace,
        flow=flow,
        flow_version=flow.versions.get(number=1),
        session_id="s",
        started_by=user,
        api_token=api_token,
        status=RunStatus.SUCCEEDED,
        finished_at=timezone.now(),
    )
    payload = {"data": "x"} if usage is None else {"data": "x", "usage": usage}
    RunEvent.objects.create(
        workspace=flow.workspace,
        run=run,
        seq=1,
        event=event,
        node_id="model",
        payload=payload,
        ts=timezone.now(),
    )
    return run
