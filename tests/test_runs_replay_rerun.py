"""Replay of finished runs from the log, re-run, and re-run from a node (real processes)."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

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
    """The frames of one replay, plus the replay_started reply."""

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
            frames.append(message)
        await ws.close()
        return started, frames

    return asyncio.run(go())


@dataclass
class Replay:
    """One replay of a side-by-side set: its frames, each with its place in the order in
    which the client received the frames of all of them."""

    started: dict
    frames: list[tuple[int, dict]]
    finished: int  # the place of its replay_finished

    @property
    def events(self) -> list[dict]:
        return [{k: v for k, v in f.items() if k != "replay"} for _, f in self.frames]

    def place_reaching(self, offsets: list[float], offset: float) -> int:
        """Where the first frame logged at least `offset` seconds into the run arrived."""
        return next(place for place, f in self.frames if offsets[f["seq"] - 1] >= offset)


def _side_by_side(live_stack, token: str, run_id: str, requests: list[dict]) -> list[Replay]:
    """Replays of one run, each on a socket of its own, all asked for before any is read.

    They play on the same Daphne at the same time, so each is the others' clock: a paced
    replay is compared with a reference replay by where their frames fall in one arrival
    order, not by seconds. A loaded machine slows them alike (the per-frame costs are the
    same in each), so the comparisons keep margins of hundreds of milliseconds of log."""

    async def go() -> list[Replay]:
        sockets = [(await connect(live_stack.ws_url, "acme", token=token))[0] for _ in requests]
        for ws, request in zip(sockets, requests, strict=True):
            await ws.send(json.dumps({"action": "replay", "run_id": run_id, **request}))
        places = itertools.count()

        async def read(ws) -> Replay:
            started = await next_message(ws)
            frames = []
            while True:
                message = await next_message(ws, 30)
                place = next(places)
                if message["event"] == "replay_finished":
                    await ws.close()
                    return Replay(started, frames, place)
                frames.append((place, message))

        return list(await asyncio.gather(*(read(ws) for ws in sockets)))

    return asyncio.run(go())


def _offsets(log: list[dict]) -> list[float]:
    """Each logged event's seconds since the first, by its `ts`."""
    t0 = datetime.fromisoformat(log[0]["ts"])
    return [(datetime.fromisoformat(e["ts"]) - t0).total_seconds() for e in log]


@pytest.fixture
def finished_demo_run(live_stack, workspace_a, erin_editor, token_for):
    flow = flowgraphs.demo_flow(
        workspace_a, erin_editor, reply=" ".join(f"w{i}" for i in range(16)), delay_ms=70
    )
    return _finished_run(live_stack, token_for(workspace_a, erin_editor), flow.pk)


def test_replay_at_1x_sends_the_log_in_order_with_its_original_timing(
    live_stack, workspace_a, bob_viewer, token_for, finished_demo_run
):
    """Its timing is checked against an instant and a 4x replay played beside it: the
    instant one ends before the 1x replay reaches the middle of the log (a 1x replay that
    ignored the timestamps would race it), and the 4x one, which takes a quarter of the
    log's span, ends after the 1x replay passed an eighth of it and before it reached three
    quarters (a 1x replay at another pace, twice as fast or as slow, would fall outside)."""
    run_id = finished_demo_run
    log = stored_log(run_id)
    offsets, rows_before = _offsets(log), RunEvent.objects.count()
    span = offsets[-1]
    assert span > 0.8, "the run must take long enough to compare paces"
    token = token_for(workspace_a, bob_viewer)
    one, instant, fast = _side_by_side(
        live_stack, token, run_id, [{"speed": 1}, {"speed": "instant"}, {"speed": 4}]
    )
    assert one.started["event"] == "replay_started" and one.started["last_seq"] == len(log)
    assert one.events == instant.events == fast.events == log
    assert instant.finished < one.place_reaching(offsets, span / 2)
    assert one.place_reaching(offsets, span / 8) < fast.finished
    assert fast.finished < one.place_reaching(offsets, span * 3 / 4)
    assert RunEvent.objects.count() == rows_before  # replay writes nothing


def test_replay_at_4x_and_instant(
    live_stack, workspace_a, bob_viewer, token_for, finished_demo_run
):
    """4x, instant and a seek, each against a 1x replay played beside them (see
    `_side_by_side`): the 4x replay ends while the 1x one is between an eighth and three
    quarters of the log's span (it takes a quarter); the instant one, and the seek's burst
    of everything up to `from_seq`, arrive before the 1x replay reaches the middle."""
    run_id = finished_demo_run
    log = stored_log(run_id)
    offsets = _offsets(log)
    span = offsets[-1]
    seek_to = len(log) - 3
    one, fast, instant, seek = _side_by_side(
        live_stack,
        token_for(workspace_a, bob_viewer),
        run_id,
        [{"speed": 1}, {"speed": 4}, {"speed": "instant"}, {"speed": 1, "from_seq": seek_to}],
    )
    assert one.events == fast.events == instant.events == log
    assert one.place_reaching(offsets, span / 8) < fast.finished
    assert fast.finished < one.place_reaching(offsets, span * 3 / 4)
    assert instant.finished < one.place_reaching(offsets, span / 2)
    # Seek: everything up to from_seq at once, then the original pace.
    assert [f["seq"] for _, f in seek.frames] == list(range(1, len(log) + 1))
    assert seek.frames[seek_to - 1][0] < one.place_reaching(offsets, span / 2)


def test_a_paused_replay_sends_nothing_until_play(
    live_stack, workspace_a, bob_viewer, token_for, finished_demo_run
):
    """Paused after its first token, a 1x replay sends nothing while a 4x replay of the same
    run plays to its end on another socket (a quarter of the log's span: unpaused, it would
    have sent a token every 70 ms of it), then resumes where it stopped on play. The pause
    is known to be in effect by a round trip on the socket, not by waiting a while."""
    run_id = finished_demo_run
    log = stored_log(run_id)
    token = token_for(workspace_a, bob_viewer)

    async def round_trip(ws) -> list[dict]:
        """The frames that arrive before the reply to a message sent now."""
        await ws.send(json.dumps({"action": "round trip"}))
        frames = []
        while (message := await next_message(ws, 30))["event"] != "rejected":
            frames.append(message)
        return frames

    async def go() -> tuple[list[dict], list[dict], list[dict]]:
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        other, _ = await connect(live_stack.ws_url, "acme", token=token)
        await ws.send(json.dumps({"action": "replay", "run_id": run_id, "speed": 1}))
        assert (await next_message(ws))["event"] == "replay_started"
        before = []
        while not before or before[-1]["event"] != "on_token":
            before.append(await next_message(ws, 30))
        await ws.send(json.dumps({"action": "replay_pause"}))
        before += await round_trip(ws)  # what was already on its way; now it is paused
        await other.send(json.dumps({"action": "replay", "run_id": run_id, "speed": 4}))
        while (await next_message(other, 30))["event"] != "replay_finished":
            pass
        while_paused = await round_trip(ws)
        await ws.send(json.dumps({"action": "replay_play"}))
        after = []
        while (message := await next_message(ws, 30))["event"] != "replay_finished":
            after.append(message)
        await ws.close()
        await other.close()
        return before, while_paused, after

    before, while_paused, after = asyncio.run(go())
    assert while_paused == []
    assert len(before) < len(log) - 3  # it was paused with most of the run still to come
    replayed = [{k: v for k, v in f.items() if k != "replay"} for f in before + after]
    assert replayed == log


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
