"""End-to-end run guarantees with real processes: Daphne, a Celery worker, Redis, the database.

The model is a real local HTTP server speaking OpenAI's streaming protocol
(tests/fakes/fake_openai.py), so langchain-openai's real client code runs in the worker.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest
import websockets
from django.utils import timezone

from accounts.models import Role, User
from runs.models import Run, RunStatus
from tests import flowgraphs
from tests.conftest import add_member, make_user
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.wsclient import (
    Received,
    assert_exactly_the_log,
    collect_until_completed,
    connect,
    follow_with_drops,
    in_thread,
    next_message,
    start_run,
    stored_log,
)

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fake_llm():
    with FakeOpenAIServer(tokens=[f" tok{i}" for i in range(400)], delay=0.004) as server:
        yield server


def _run_async(coro):
    return asyncio.run(coro)


def test_resume_after_20_random_drops_delivers_each_event_once(
    live_stack, workspace_a, erin_editor, token_for, fake_llm
):
    token = token_for(workspace_a, erin_editor)
    flow = flowgraphs.openai_flow(workspace_a, erin_editor, fake_llm.base_url)
    run_id, received = _run_async(
        follow_with_drops(
            live_stack.ws_url,
            "acme",
            token,
            {"action": "run", "flow": flow.pk, "inputs": {"input": "hi"}},
            drops=20,
            rng=random.Random(20),
        )
    )
    log = assert_exactly_the_log(received, run_id)
    tokens = "".join(e["data"] for e in log if e["event"] == "on_token")
    assert tokens == "".join(f" tok{i}" for i in range(400))
    assert Run.objects.get(pk=run_id).status == RunStatus.SUCCEEDED


def test_worker_sigkill_mid_run_fails_the_run_and_the_watcher_gets_the_final_event(
    live_stack, workspace_a, erin_editor, bob_viewer, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply=" word" * 400, delay_ms=20)
    editor_token = token_for(workspace_a, erin_editor)
    viewer_token = token_for(workspace_a, bob_viewer)

    async def scenario() -> tuple[str, Received]:
        ws, _session = await connect(live_stack.ws_url, "acme", token=editor_token)
        run_id = await start_run(ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "x"}})
        watcher, _ = await connect(live_stack.ws_url, "acme", token=viewer_token)
        await watcher.send(json.dumps({"action": "resume", "run_id": run_id, "after_seq": 0}))
        received = Received()
        while not any(e["event"] == "on_token" for e in received.events):
            message = await next_message(watcher)
            if message.get("run_id") == run_id:
                received.add(message)
        live_stack.kill("worker")
        # No worker runs again until the scenario is over, and no beat runs in this stack:
        # the run can only be ended by the consumer watching it, once its 3 s lease lapses.
        # The deadline is a safety net (the queue timeout would take 30 minutes).
        await collect_until_completed(watcher, run_id, received, timeout=60)
        await ws.close()
        await watcher.close()
        return run_id, received

    try:
        run_id, received = _run_async(scenario())
    finally:
        if "worker" not in live_stack.procs:  # killed above: bring the stack back
            live_stack.start_worker()
    assert_exactly_the_log(received, run_id)
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.FAILED and "stopped responding" in run.error
    assert received.events[-1]["status"] == "error"
    assert received.events[-2]["event"] == "error"


def test_two_sessions_and_two_workspaces_never_see_each_others_events(
    live_stack, workspace_a, workspace_b, erin_editor, mallory_owner, token_for
):
    flow_a = flowgraphs.demo_flow(workspace_a, erin_editor, reply="alpha " * 30, delay_ms=2)
    flow_b = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="bravo " * 30, delay_ms=2)
    token_a = token_for(workspace_a, erin_editor)
    token_b = token_for(workspace_b, mallory_owner)

    async def one(token: str, slug: str, flow_id: int) -> tuple[str, list[dict]]:
        ws, _ = await connect(live_stack.ws_url, slug, token=token)
        run_id = await start_run(ws, {"action": "run", "flow": flow_id, "inputs": {"input": "q"}})
        seen: list[dict] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (seen and seen[-1].get("event") == "completed" and seen[-1]["run_id"] == run_id):
            seen.append(await next_message(ws, deadline - loop.time()))
        # Stay until every run of the test has completed, then make a round trip on the
        # socket: other runs' events, had they leaked here, were sent before (instead of
        # lingering a second and hoping they would have arrived by then).
        finished.append(run_id)
        if len(finished) == 3:
            all_finished.set()
        await asyncio.wait_for(all_finished.wait(), 60)
        await ws.send(json.dumps({"action": "round trip"}))
        while (message := await next_message(ws, 30))["event"] != "rejected":
            seen.append(message)
        await ws.close()
        return run_id, seen

    finished: list[str] = []
    all_finished = asyncio.Event()

    async def scenario():
        return await asyncio.gather(
            one(token_a, "acme", flow_a.pk),
            one(token_a, "acme", flow_a.pk),
            one(token_b, "bravo", flow_b.pk),
        )

    results = _run_async(scenario())
    for run_id, seen in results:
        foreign = {m["run_id"] for m in seen if "run_id" in m} - {run_id}
        assert not foreign, f"run {run_id}'s sockets saw events of {foreign}"
        texts = "".join(m.get("data", "") for m in seen if m.get("event") == "on_token")
        assert texts.strip().split()[0] in {"alpha", "bravo"}
    runs = {r: Run.objects.get(pk=r) for r, _ in results}
    assert {r.workspace.slug for r in runs.values()} == {"acme", "bravo"}


def test_cancel_mid_stream_ends_the_run_cancelled(live_stack, workspace_a, erin_editor, token_for):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply=" slow" * 500, delay_ms=20)
    token = token_for(workspace_a, erin_editor)

    async def scenario() -> tuple[str, Received]:
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        run_id = await start_run(ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "x"}})
        received = Received()
        while sum(e["event"] == "on_token" for e in received.events) < 2:
            message = await next_message(ws)
            if message.get("run_id") == run_id:
                received.add(message)
        await ws.send(json.dumps({"action": "cancel", "run_id": run_id}))
        await collect_until_completed(ws, run_id, received, timeout=20)
        await ws.close()
        return run_id, received

    run_id, received = _run_async(scenario())
    assert_exactly_the_log(received, run_id)
    assert received.events[-1]["status"] == "cancelled"
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.CANCELLED
    streamed = "".join(e["data"] for e in received.events if e["event"] == "on_token")
    assert 0 < len(streamed) < len(" slow" * 500)


HOSTILE_FRAMES = [
    "not json",
    "{",
    "[]",
    "42",
    "null",
    '"run"',
    json.dumps({"action": "explode"}),
    json.dumps({"action": ["run"]}),
    json.dumps({"action": "resume"}),
    json.dumps({"action": "resume", "run_id": "00000000-0000-0000-0000-000000000000"}),
    json.dumps({"action": "resume", "run_id": "../../etc/passwd", "after_seq": 0}),
    json.dumps({"action": "resume", "run_id": "x" * 5000, "after_seq": 0}),
    json.dumps(
        {"action": "resume", "run_id": "00000000-0000-0000-0000-000000000000", "after_seq": -1}
    ),
    json.dumps({"action": "cancel", "run_id": 7}),
    json.dumps({"action": "run", "flow": "1 OR 1=1"}),
    json.dumps({"action": "run", "flow": 999999999}),
    json.dumps({"action": "run", "flow": True}),
    json.dumps({"nodes": "everything", "edges": []}),
    json.dumps({"nodes": [{"id": "a", "component": "os.system", "params": {}}], "edges": []}),
    json.dumps({"nodes": [], "edges": [], "inputs": "rm -rf /"}),
    "[" * 100_000 + "]" * 100_000,
]


def test_hostile_frames_are_rejected_and_the_socket_stays_open(
    live_stack, workspace_a, workspace_b, erin_editor, mallory_owner, token_for
):
    token = token_for(workspace_a, erin_editor)
    foreign = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="secret", delay_ms=0)
    frames = [*HOSTILE_FRAMES, json.dumps({"action": "run", "flow": foreign.pk})]
    before = Run.objects.count()

    async def scenario() -> list[dict]:
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        replies = []
        for frame in frames:
            await ws.send(frame)
            replies.append(await next_message(ws))
        # Still open and serving:
        await ws.send(json.dumps({"action": "nope"}))
        replies.append(await next_message(ws))
        await ws.close()
        return replies

    replies = _run_async(scenario())
    assert len(replies) == len(frames) + 1
    for frame, reply in zip(frames, replies, strict=False):
        assert reply["event"] == "rejected", (frame[:80], reply)
        assert reply["code"] and reply["message"]
    assert Run.objects.count() == before


def test_viewer_cannot_run_or_cancel_over_the_socket(
    live_stack, workspace_a, bob_viewer, erin_editor, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="hello", delay_ms=0)
    token = token_for(workspace_a, bob_viewer)

    async def scenario() -> list[dict]:
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        await ws.send(json.dumps({"action": "run", "flow": flow.pk, "inputs": {"input": "x"}}))
        replies = [await next_message(ws)]
        await ws.close()
        return replies

    (reply,) = _run_async(scenario())
    assert reply["event"] == "rejected" and reply["code"] == "forbidden"
    assert not Run.objects.exists()


def test_handshake_with_foreign_or_missing_origin_is_refused(
    live_stack, workspace_a, erin_editor, token_for
):
    token = token_for(workspace_a, erin_editor)

    async def attempt(origin):
        try:
            ws, _ = await connect(live_stack.ws_url, "acme", token=token, origin=origin)
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code
        await ws.close()
        return 101

    assert _run_async(attempt("http://evil.example")) == 403
    assert _run_async(attempt(None)) == 403
    own = live_stack.http_url  # http://127.0.0.1:<port>
    # The same host on another port or scheme is another origin (another program's page).
    assert _run_async(attempt("http://127.0.0.1:9999")) == 403
    assert _run_async(attempt(own.replace("http://", "https://"))) == 403
    assert _run_async(attempt("http://127.0.0.1")) == 403
    assert _run_async(attempt("default")) == 101
    assert _run_async(attempt(own.upper().replace("HTTP://", "http://"))) == 101


def test_non_member_and_bad_token_are_refused_at_handshake(
    live_stack, workspace_a, workspace_b, mallory_owner, token_for
):
    token_b = token_for(workspace_b, mallory_owner)

    async def attempt(slug, token):
        try:
            ws, _ = await connect(live_stack.ws_url, slug, token=token)
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code
        await ws.close()
        return 101

    assert _run_async(attempt("acme", token_b)) == 403
    assert _run_async(attempt("acme", "fdk_not-a-token")) == 403
    assert _run_async(attempt("bravo", token_b)) == 101


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_frames_over_the_limits(live_stack, workspace_a, erin_editor, token_for):
    token = token_for(workspace_a, erin_editor)
    daphne_pid = live_stack.procs["daphne"].pid

    async def over_app_limit() -> dict:
        ws, _ = await connect(live_stack.ws_url, "acme", token=token, max_size=None)
        # Over the application limit (256 KiB) but under the transport limit (1 MiB).
        await ws.send(json.dumps({"action": "run", "pad": "x" * 300_000}))
        reply = await next_message(ws)
        await ws.send(json.dumps({"action": "nope"}))  # still open
        second = await next_message(ws)
        await ws.close()
        return reply, second

    async def over_transport_limit() -> bool:
        ws, _ = await connect(live_stack.ws_url, "acme", token=token, max_size=None)
        try:
            await ws.send("x" * (4 * 1024 * 1024))
            await next_message(ws, 10)
        except websockets.exceptions.ConnectionClosed:
            return True
        return False

    reply, second = _run_async(over_app_limit())
    assert reply["event"] == "rejected" and reply["code"] == "too_large"
    assert second["code"] == "unknown_action"
    before = _rss_kib(daphne_pid)
    for _ in range(8):  # 32 MiB offered in total
        assert _run_async(over_transport_limit()), "an over-limit frame must close the socket"
    grown = _rss_kib(daphne_pid) - before
    assert grown < 12 * 1024, f"daphne grew by {grown} KiB on refused frames"
    assert live_stack.procs["daphne"].poll() is None


def test_socket_is_closed_within_seconds_when_token_revoked_or_user_deactivated(
    live_stack, workspace_a, erin_editor, bob_viewer, token_for
):
    from accounts.models import ApiToken

    editor_token = token_for(workspace_a, erin_editor)
    viewer_token = token_for(workspace_a, bob_viewer)

    async def closed_by_the_server(token: str, action) -> int:
        """The close code, once the server closes the idle socket by itself: the client
        sends nothing, so only the periodic recheck (every 2 s) can close it. The wait is a
        safety net far above that period, not a measurement."""
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        await in_thread(action)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await next_message(ws, 30)
        assert info.value.rcvd is not None
        return info.value.rcvd.code

    revoke = lambda: ApiToken.objects.filter(user=erin_editor).update(revoked_at=timezone.now())  # noqa: E731
    deactivate = lambda: User.objects.filter(pk=bob_viewer.pk).update(is_active=False)  # noqa: E731
    assert _run_async(closed_by_the_server(editor_token, revoke)) == 4401
    assert _run_async(closed_by_the_server(viewer_token, deactivate)) == 4401


def test_removed_member_is_disconnected(live_stack, workspace_a, token_for):
    from accounts.models import Membership

    dave = make_user("dave@example.com")
    add_member(workspace_a, dave, Role.EDITOR)
    token = token_for(workspace_a, dave)

    async def scenario() -> int:
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        await in_thread(Membership.objects.filter(user=dave).delete)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await next_message(ws, 10)
        return info.value.rcvd.code

    assert _run_async(scenario()) == 4401


def test_seed_snippet_client_just_works(live_stack, workspace_a, erin_editor, token_for):
    """`ws.send(JSON.stringify(flowData))`, then on_token / completed handlers."""
    token = token_for(workspace_a, erin_editor)
    graph = flowgraphs.demo_graph(reply="snippet works", delay_ms=1)

    async def scenario() -> tuple[str, Received]:
        ws, _ = await connect(live_stack.ws_url, "acme", token=token)
        await ws.send(json.dumps({**graph, "inputs": {"input": "hello"}}))
        received = Received()
        run_id = None
        while not received.completed:
            message = await next_message(ws)
            if message["event"] == "accepted":
                run_id = message["run_id"]
            elif "seq" in message:
                received.add(message)
        await ws.close()
        return run_id, received

    run_id, received = _run_async(scenario())
    log = assert_exactly_the_log(received, run_id)
    assert "".join(e["data"] for e in log if e["event"] == "on_token") == "snippet works"
    run = Run.objects.get(pk=run_id)
    assert run.flow_version.is_draft and run.status == RunStatus.SUCCEEDED
    assert stored_log(run_id)[-1]["status"] == "success"


def test_a_browser_socket_is_closed_within_seconds_of_signing_out(
    live_stack, workspace_a, erin_editor
):
    import httpx

    from tests.conftest import PASSWORD

    base = live_stack.http_url
    with httpx.Client(base_url=base) as browser:
        browser.get("/accounts/login/")
        response = browser.post(
            "/accounts/login/",
            data={
                "username": erin_editor.email,
                "password": PASSWORD,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/accounts/login/"},
        )
        assert response.status_code == 302
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())

        async def scenario() -> int:
            ws = await websockets.connect(
                f"{live_stack.ws_url}/ws/w/acme/exec",
                additional_headers={"Cookie": cookie},
                origin=base,
            )
            assert (await next_message(ws))["event"] == "session"
            logout = await asyncio.to_thread(
                browser.post,
                "/accounts/logout/",
                data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                headers={"Referer": f"{base}/w/acme/"},
            )
            assert logout.status_code == 302
            # The client sends nothing: only the periodic recheck (every 2 s) can close it.
            # The wait is a safety net far above that period, not a measurement.
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                await next_message(ws, 30)
            return info.value.rcvd.code

        code = _run_async(scenario())
    assert code == 4401
