"""Human approval end to end with real processes (Daphne, Celery, Redis, PostgreSQL): a run
pauses at an approval node in the `waiting` state holding no worker, survives every
process being stopped and started again, and goes on when a second member approves over
the socket (with an edited value and a comment, audited); the client that followed it
receives exactly its log. A viewer, and an editor below the node's role, cannot decide;
rejecting takes the other branch; a timeout decides by itself; cancelling a waiting run
ends it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from django.test import Client

from accounts.models import Membership
from audit.models import AuditEntry
from flows.services import flow_create
from runs.approvals import expire_approvals
from runs.models import Approval, ApprovalStatus, Run, RunStatus
from tests.wsclient import (
    Received,
    assert_exactly_the_log,
    collect_until_completed,
    connect,
    next_message,
    start_run,
)

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def approval_graph(**params: Any) -> dict[str, Any]:
    """input -> approval -> (approved) ok / (rejected) no; and input -> side, in parallel."""

    def node(node_id: str, component: str, x: int, **node_params: Any) -> dict[str, Any]:
        return {
            "id": node_id,
            "component": component,
            "params": node_params,
            "position": {"x": x, "y": 0},
        }

    def edge(source: str, port: str, target: str, target_port: str = "text") -> dict[str, Any]:
        return {"source": source, "source_port": port, "target": target, "target_port": target_port}

    return {
        "nodes": [
            node("input", "io.chat_input", 0),
            node("check", "logic.approval", 200, prompt="Send this reply?", **params),
            node("ok", "io.text_output", 400),
            node("no", "io.text_output", 400),
            node("side", "io.text_output", 200),
        ],
        "edges": [
            edge("input", "text", "check", "value"),
            edge("check", "approved", "ok"),
            edge("check", "rejected", "no"),
            edge("input", "text", "side"),
        ],
    }


def _flow(workspace: Any, user: Any, **params: Any) -> Any:
    return flow_create(
        workspace=workspace,
        acting=Membership.objects.get(workspace=workspace, user=user),
        name="Approve",
        graph=approval_graph(**params),
    )


async def _until(ws: Any, run_id: str, received: Received, event: str) -> dict[str, Any]:
    while True:
        message = await next_message(ws, 30)
        if message.get("run_id") == run_id and "seq" in message:
            received.add(message)
            if message["event"] == event:
                return message


def _wait_status(run_id: str, status: str) -> Run:
    deadline = time.monotonic() + 30
    while True:
        run = Run.objects.get(pk=run_id)
        if run.status == status:
            return run
        assert time.monotonic() < deadline, f"run is {run.status}, not {status}"
        time.sleep(0.05)


async def _decide(ws: Any, run_id: str, **fields: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"action": "decide", "run_id": run_id, "node_id": "check", **fields}))
    while True:
        reply = await next_message(ws, 20)
        if reply["event"] in ("decided", "rejected"):
            return reply


def test_a_waiting_run_survives_every_process_restarting_and_goes_on_when_approved(
    live_stack, workspace_a, erin_editor, carol_admin, token_for
):
    flow = _flow(workspace_a, erin_editor)
    editor, admin = token_for(workspace_a, erin_editor), token_for(workspace_a, carol_admin)

    async def ask() -> tuple[str, Received]:
        ws, _ = await connect(live_stack.ws_url, "acme", token=editor)
        async with ws:
            run_id = await start_run(
                ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "退款已批准"}}
            )
            received = Received()
            asked = await _until(ws, run_id, received, "waiting_for_approval")
            assert asked["node_id"] == "check"
            assert asked["data"]["prompt"] == "Send this reply?"
            assert asked["data"]["value"] == "退款已批准" and asked["data"]["role"] == "editor"
            return run_id, received

    run_id, received = asyncio.run(ask())
    run = _wait_status(run_id, RunStatus.WAITING)
    assert run.lease_expires_at is None and run.finished_at is None
    assert Approval.objects.get(run=run).status == ApprovalStatus.PENDING
    events = [e["event"] for e in received.events]
    assert "completed" not in events and events.count("waiting_for_approval") == 1
    # The independent branch finished; nothing behind the approval ran.
    assert ("node_finished", "side") in {(e["event"], e["node_id"]) for e in received.events}
    assert not [e for e in received.events if e["node_id"] in ("ok", "no")]

    # Every process goes away and comes back: the run is only rows in the database.
    live_stack.kill("daphne")
    live_stack.kill("worker")
    live_stack.start_worker()
    live_stack.start_daphne()

    async def approve() -> dict[str, Any]:
        ws, _ = await connect(live_stack.ws_url, "acme", token=admin)
        async with ws:
            await ws.send(
                json.dumps({"action": "resume", "run_id": run_id, "after_seq": received.last_seq})
            )
            reply = await _decide(
                ws, run_id, decision="approve", value="退款已批准（已核对）", comment="checked"
            )
            assert reply == {
                "event": "decided",
                "run_id": run_id,
                "node_id": "check",
                "decision": "approved",
            }
            await collect_until_completed(ws, run_id, received)
            return reply

    asyncio.run(approve())
    log = assert_exactly_the_log(received, run_id)
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"ok": "退款已批准（已核对）", "side": "退款已批准"}
    decided = next(e for e in log if e["event"] == "approval_decided")
    assert decided["data"] == {
        "decision": "approved",
        "by": carol_admin.email,
        "comment": "checked",
        "edited": True,
        "timed_out": False,
    }
    assert [e["event"] for e in log].count("run_resumed") == 1
    skipped = next(e for e in log if e["event"] == "node_finished" and e["node_id"] == "no")
    assert skipped["skipped"] is True
    entry = AuditEntry.objects.get(action="run.approve")
    assert entry.actor == carol_admin and entry.target == f"run:{run_id}"
    assert entry.after == {
        "node": "check",
        "decision": "approved",
        "comment": "checked",
        "edited": True,
    }


def test_who_may_decide_and_rejecting(
    live_stack, workspace_a, alice_owner, erin_editor, bob_viewer, token_for
):
    flow = _flow(workspace_a, erin_editor, role="admin", allow_edit=False)
    editor, viewer = token_for(workspace_a, erin_editor), token_for(workspace_a, bob_viewer)

    async def scenario() -> str:
        ws, _ = await connect(live_stack.ws_url, "acme", token=editor)
        async with ws:
            run_id = await start_run(
                ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "hi"}}
            )
            await _until(ws, run_id, Received(), "waiting_for_approval")
            # The editor is below the node's role (admin).
            refused = await _decide(ws, run_id, decision="approve")
            assert refused["event"] == "rejected" and refused["code"] == "forbidden"
        ws, _ = await connect(live_stack.ws_url, "acme", token=viewer)
        async with ws:
            refused = await _decide(ws, run_id, decision="approve")
            assert refused["event"] == "rejected" and refused["code"] == "forbidden"
        return run_id

    run_id = asyncio.run(scenario())
    _wait_status(run_id, RunStatus.WAITING)
    assert Approval.objects.get(run_id=run_id).status == ApprovalStatus.PENDING

    url = f"/api/w/acme/runs/{run_id}/approvals/check"
    owner = {"HTTP_AUTHORIZATION": f"Bearer {token_for(workspace_a, alice_owner)}"}

    def post(body: dict[str, Any], who: dict[str, Any] = owner) -> Any:
        return Client().post(url, json.dumps(body), "application/json", **who)

    as_viewer = post({"decision": "approve"}, {"HTTP_AUTHORIZATION": f"Bearer {viewer}"})
    assert as_viewer.status_code == 403
    listed = Client().get("/api/w/acme/approvals", **owner).json()
    assert [(a["run_id"], a["node_id"], a["status"]) for a in listed] == [
        (run_id, "check", "pending")
    ]
    edited = post({"decision": "approve", "value": "changed"})
    assert edited.status_code == 400 and edited.json()["code"] == "edit_not_allowed"
    rejected = post({"decision": "reject", "comment": "不行"})
    assert rejected.status_code == 200, rejected.content
    assert rejected.json()["status"] == "rejected" and rejected.json()["comment"] == "不行"
    assert post({"decision": "approve"}).status_code == 409
    run = _wait_status(run_id, RunStatus.SUCCEEDED)
    assert run.outputs == {"no": "hi", "side": "hi"}
    assert AuditEntry.objects.filter(action="run.reject", target=f"run:{run_id}").count() == 1


def test_a_timeout_decides_and_cancelling_a_waiting_run_ends_it(
    live_stack, workspace_a, erin_editor, token_for
):
    flow = _flow(workspace_a, erin_editor, timeout_seconds=3600, on_timeout="approve")
    editor = token_for(workspace_a, erin_editor)

    async def start_two() -> list[str]:
        ws, _ = await connect(live_stack.ws_url, "acme", token=editor)
        async with ws:
            ids = []
            for text in ("one", "two"):
                run_id = await start_run(
                    ws, {"action": "run", "flow": flow.pk, "inputs": {"input": text}}
                )
                asked = await _until(ws, run_id, Received(), "waiting_for_approval")
                assert asked["data"]["timeout_at"] is not None
                ids.append(run_id)
            return ids

    timed, cancelled = asyncio.run(start_two())
    _wait_status(timed, RunStatus.WAITING)
    _wait_status(cancelled, RunStatus.WAITING)
    Approval.objects.filter(run_id=timed).update(timeout_at="2000-01-01T00:00:00Z")
    assert len(expire_approvals()) == 1
    run = _wait_status(timed, RunStatus.SUCCEEDED)
    assert run.outputs["ok"] == "one"
    assert Approval.objects.get(run_id=timed).timed_out is True
    assert AuditEntry.objects.filter(action="run.approval_timeout", target=f"run:{timed}").exists()

    async def cancel() -> None:
        ws, _ = await connect(live_stack.ws_url, "acme", token=editor)
        async with ws:
            await ws.send(json.dumps({"action": "cancel", "run_id": cancelled}))
            await ws.send(json.dumps({"action": "resume", "run_id": cancelled, "after_seq": 0}))
            received = Received()
            await collect_until_completed(ws, cancelled, received)
            assert received.events[-1]["status"] == "cancelled"

    asyncio.run(cancel())
    assert Run.objects.get(pk=cancelled).status == RunStatus.CANCELLED
    assert Approval.objects.get(run_id=cancelled).status == ApprovalStatus.CANCELLED


@pytest.mark.django_db
def test_the_approvals_page_lists_waiting_runs_and_who_may_decide(
    workspace_a, erin_editor, bob_viewer, client_for, workspace_b, mallory_owner
):
    from tests.flowgraphs import save_flow

    flow = save_flow(workspace_a, erin_editor, approval_graph(role="admin"), name="Refunds")
    run = Run.objects.create(
        workspace=workspace_a,
        flow=flow,
        flow_version=flow.versions.get(),
        session_id="s",
        started_by=erin_editor,
        status=RunStatus.WAITING,
    )
    Approval.objects.create(
        workspace=workspace_a,
        run=run,
        node_id="check",
        prompt="退款 120 元？",
        role="admin",
        value="x",
    )
    page = client_for(bob_viewer).get("/w/acme/approvals/").content.decode()
    assert "退款 120 元？" in page and "Refunds" in page and f"/w/acme/runs/{run.pk}/" in page
    assert "Open the run" in page and ">you<" not in page  # a viewer does not decide
    assert "Open the run" in client_for(erin_editor).get("/w/acme/approvals/").content.decode()
    other = client_for(mallory_owner).get(f"/w/{workspace_b.slug}/approvals/").content.decode()
    assert "退款" not in other and "No run is waiting" in other
