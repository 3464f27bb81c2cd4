"""Replay of finished runs from the log, re-run, and re-run from a node (real processes)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from flows import crypto
from flows.models import Credential
from runs.models import Run, RunEvent, RunStatus
from tests import flowgraphs
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.wsclient import (
    Received,
    collect_until_completed,
    connect,
    next_message,
    start_run,
    stored_log,
)

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def _finished_run(live_stack, token: str, flow_id: int) -> str:
    async def go() -> str:
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        run_id = await start_run(ws, {"action": "run", "flow": flow_id, "inputs": {"input": "q"}})
        await collect_until_completed(ws, run_id, Received())
        await ws.close()
        return run_id

    return asyncio.run(go())


def _replay(live_stack, token: str, run_id: str, speed, from_seq: int = 0):
    """[(arrival monotonic seconds, frame)] of one replay, plus the replay_started reply."""

    async def go():
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        await ws.send(
            json.dumps({"action": "replay", "run_id": run_id, "speed": speed, "from_seq": from_seq})
        )
        started = await next_message(ws)
        frames = []
        while True:
            message = await next_message(ws, 30)
            if message["event"] == "replay_finished":
                break
            frames.append((time.monotonic(), message))
        await ws.close()
        return started, frames

    return asyncio.run(go())


@pytest.fixture
def finished_demo_run(live_stack, workspace_a, erin_editor, token_for):
    flow = flowgraphs.demo_flow(
        workspace_a, erin_editor, reply=" ".join(f"w{i}" for i in range(16)), delay_ms=70
    )
    return _finished_run(live_stack, token_for(workspace_a, erin_editor), flow.pk)


def test_replay_at_1x_sends_the_log_in_order_with_its_original_timing(
    live_stack, workspace_a, bob_viewer, token_for, finished_demo_run
):
    run_id = finished_demo_run
    log = stored_log(run_id)
    rows_before = RunEvent.objects.count()
    started, frames = _replay(live_stack, token_for(workspace_a, bob_viewer), run_id, 1)
    assert started["event"] == "replay_started" and started["last_seq"] == len(log)
    replayed = [{k: v for k, v in f.items() if k != "replay"} for _, f in frames]
    assert replayed == log
    # Relative timing: arrival offsets follow the logged ts offsets.
    from datetime import datetime

    t0 = datetime.fromisoformat(log[0]["ts"])
    logged = [(datetime.fromisoformat(e["ts"]) - t0).total_seconds() for e in log]
    arrived = [at - frames[0][0] for at, _ in frames]
    assert logged[-1] > 0.8, "the run must take long enough to measure its timing"
    worst = max(abs(a - b) for a, b in zip(arrived, logged, strict=True))
    assert worst < 0.25, f"replay timing drifted by {worst:.3f}s"
    assert RunEvent.objects.count() == rows_before  # replay writes nothing


def test_replay_at_4x_and_instant(
    live_stack, workspace_a, bob_viewer, token_for, finished_demo_run
):
    run_id = finished_demo_run
    log = stored_log(run_id)
    token = token_for(workspace_a, bob_viewer)
    from datetime import datetime

    span = (
        datetime.fromisoformat(log[-1]["ts"]) - datetime.fromisoformat(log[0]["ts"])
    ).total_seconds()
    _, fast = _replay(live_stack, token, run_id, 4)
    took = fast[-1][0] - fast[0][0]
    assert abs(took - span / 4) < 0.2, (took, span)
    _, instant = _replay(live_stack, token, run_id, "instant")
    assert [{k: v for k, v in f.items() if k != "replay"} for _, f in instant] == log
    assert instant[-1][0] - instant[0][0] < 0.3
    # Seek: everything up to from_seq at once, then the original pace.
    seek_to = len(log) - 3
    _, seek = _replay(live_stack, token, run_id, 1, from_seq=seek_to)
    assert [f["seq"] for _, f in seek] == list(range(1, len(log) + 1))
    assert seek[seek_to - 1][0] - seek[0][0] < 0.2


def test_replay_of_an_unfinished_or_foreign_run_is_rejected(
    live_stack, workspace_a, workspace_b, erin_editor, mallory_owner, token_for
):
    slow = flowgraphs.demo_flow(workspace_a, erin_editor, reply=" x" * 200, delay_ms=50)
    token = token_for(workspace_a, erin_editor)
    foreign_run = _finished_run_in(live_stack, workspace_b, mallory_owner, token_for)

    async def go():
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        run_id = await start_run(ws, {"action": "run", "flow": slow.pk, "inputs": {"input": "q"}})
        await ws.send(json.dumps({"action": "replay", "run_id": run_id}))
        replies = []
        while len(replies) < 1:
            message = await next_message(ws)
            if message["event"] == "rejected":
                replies.append(message)
        await ws.send(json.dumps({"action": "replay", "run_id": foreign_run}))
        while len(replies) < 2:
            message = await next_message(ws)
            if message["event"] == "rejected":
                replies.append(message)
        await ws.send(json.dumps({"action": "cancel", "run_id": run_id}))
        # Let the run end before the test does (its teardown truncates every table).
        await collect_until_completed(ws, run_id, Received())
        await ws.close()
        return replies

    unfinished, foreign = asyncio.run(go())
    assert unfinished["code"] == "not_finished"
    assert foreign["code"] == "not_found"


def _finished_run_in(live_stack, workspace, user, token_for) -> str:
    flow = flowgraphs.demo_flow(workspace, user, reply="theirs", delay_ms=0)
    token, slug = token_for(workspace, user), workspace.slug

    async def go() -> str:
        ws, _ = await connect(live_stack.ws_url, slug, token=token)
        run_id = await start_run(ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "q"}})
        await collect_until_completed(ws, run_id, Received())
        await ws.close()
        return run_id

    return asyncio.run(go())


def _two_model_graph(first: int, second: int) -> dict:
    node = {"position": {"x": 0, "y": 0}}
    return {
        "nodes": [
            {**node, "id": "input", "component": "io.chat_input", "params": {}},
            {
                **node,
                "id": "draft",
                "component": "llm.openai_chat",
                "params": {"credential": first, "model": "fake"},
            },
            {
                **node,
                "id": "prompt",
                "component": "prompt.template",
                "params": {"template": "Polish this: {text}"},
            },
            {
                **node,
                "id": "polish",
                "component": "llm.openai_chat",
                "params": {"credential": second, "model": "fake"},
            },
            {**node, "id": "output", "component": "io.text_output", "params": {}},
        ],
        "edges": [
            {"source": "input", "source_port": "text", "target": "draft", "target_port": "prompt"},
            {"source": "draft", "source_port": "text", "target": "prompt", "target_port": "text"},
            {
                "source": "prompt",
                "source_port": "prompt",
                "target": "polish",
                "target_port": "prompt",
            },
            {"source": "polish", "source_port": "text", "target": "output", "target_port": "text"},
        ],
    }


def test_rerun_and_rerun_from_a_node_reuse_recorded_upstream_outputs(
    live_stack, workspace_a, erin_editor, token_for
):
    token = token_for(workspace_a, erin_editor)
    with (
        FakeOpenAIServer(reply="first draft") as drafter,
        FakeOpenAIServer(reply="polished text") as polisher,
    ):
        creds = [
            Credential.objects.create(
                workspace=workspace_a,
                name=name,
                provider="openai",
                base_url=server.base_url,
                api_key_encrypted=crypto.encrypt("sk"),
                created_by=erin_editor,
            )
            for name, server in (("drafter", drafter), ("polisher", polisher))
        ]
        flow = flowgraphs.save_flow(
            workspace_a, erin_editor, _two_model_graph(creds[0].pk, creds[1].pk)
        )
        original = _finished_run(live_stack, token, flow.pk)
        assert (len(drafter.requests), len(polisher.requests)) == (1, 1)

        async def rerun(body: dict) -> str:
            ws, _ = await connect(live_stack.ws_url, "acme", token=token)
            run_id = await start_run(ws, {"action": "rerun", "run_id": original, **body})
            await collect_until_completed(ws, run_id, Received())
            await ws.close()
            return run_id

        full = asyncio.run(rerun({}))
        assert (len(drafter.requests), len(polisher.requests)) == (2, 2)
        partial = asyncio.run(rerun({"from_node": "prompt"}))
        # Upstream of `prompt` came from the log: the drafting model was not called again.
        assert (len(drafter.requests), len(polisher.requests)) == (2, 3)
        assert polisher.requests[-1]["messages"][-1]["content"] == "Polish this: first draft"

    runs = {r.pk: r for r in Run.objects.filter(pk__in=[original, full, partial])}
    for rerun_id in (full, partial):
        run = runs[uuid.UUID(rerun_id)]
        assert str(run.rerun_of_id) == original and run.status == RunStatus.SUCCEEDED
        assert run.flow_version_id == runs[uuid.UUID(original)].flow_version_id
        assert run.outputs == {"output": "polished text"}
    finished = {e["node_id"]: e for e in stored_log(partial) if e["event"] == "node_finished"}
    assert finished["draft"]["recorded_from"] == original
    assert finished["draft"]["data"] == "first draft"
    assert "recorded_from" not in finished["polish"]
    assert not any(
        e["event"] == "on_token" and e["node_id"] == "draft" for e in stored_log(partial)
    )


def test_rerun_from_an_unknown_node_is_refused(
    live_stack, workspace_a, erin_editor, token_for, finished_demo_run
):
    token = token_for(workspace_a, erin_editor)

    async def go():
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        await ws.send(
            json.dumps({"action": "rerun", "run_id": finished_demo_run, "from_node": "ghost"})
        )
        reply = await next_message(ws)
        await ws.close()
        return reply

    count = Run.objects.count()
    reply = asyncio.run(go())
    assert reply["event"] == "rejected" and reply["code"] == "invalid_node"
    assert Run.objects.count() == count


def test_replay_and_watching_anothers_run_are_audited(
    live_stack, workspace_a, bob_viewer, token_for, finished_demo_run
):
    from audit.models import AuditEntry

    _replay(live_stack, token_for(workspace_a, bob_viewer), finished_demo_run, "instant")

    async def watch():
        ws, _ = await connect(live_stack.ws_url, "acme", token=token_for_bob)
        await ws.send(json.dumps({"action": "resume", "run_id": finished_demo_run, "after_seq": 0}))
        await collect_until_completed(ws, finished_demo_run, Received())
        await ws.close()

    token_for_bob = token_for(workspace_a, bob_viewer)
    asyncio.run(watch())
    entries = AuditEntry.objects.filter(target=f"run:{finished_demo_run}", actor=bob_viewer)
    assert set(entries.values_list("action", flat=True)) == {"run.replay", "run.watch"}
    assert all(e.workspace_id == workspace_a.pk and e.ip == "127.0.0.1" for e in entries)
