"""A password change or reset ends every other session, and long-lived connections (the
WebSocket and the SSE stream) end with the credential that opened them."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
import websockets
from django.contrib.auth.tokens import default_token_generator
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import ApiToken
from runs.models import Run, RunStatus
from tests import flowgraphs
from tests.conftest import PASSWORD
from tests.live import cookie_header, signed_in_browser
from tests.wsclient import next_message, stored_log

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "a-new-passphrase-for-erin-42"


async def _browser_socket(live_stack, browser) -> websockets.ClientConnection:
    ws = await websockets.connect(
        f"{live_stack.ws_url}/ws/w/acme/exec",
        additional_headers={"Cookie": cookie_header(browser)},
        origin=live_stack.http_url,
    )
    assert (await next_message(ws))["event"] == "session"
    return ws


async def _close_code(ws) -> int:
    with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
        await next_message(ws, 15)
    return info.value.rcvd.code


async def _still_answers(ws) -> bool:
    await ws.send(json.dumps({"action": "no-such-action"}))
    return (await next_message(ws, 15))["event"] == "rejected"


def _change_password(browser, base: str) -> None:
    browser.get("/accounts/password/change/")
    response = browser.post(
        "/accounts/password/change/",
        data={
            "old_password": PASSWORD,
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/accounts/password/change/"},
    )
    assert response.status_code == 302, response.text[:500]


def test_a_password_change_closes_the_other_sessions_sockets_and_keeps_its_own(
    live_stack, workspace_a, erin_editor
):
    base = live_stack.http_url
    laptop = signed_in_browser(base, erin_editor.email, PASSWORD)
    phone = signed_in_browser(base, erin_editor.email, PASSWORD)

    async def scenario() -> tuple[int, int, bool]:
        mine = await _browser_socket(live_stack, laptop)
        other = await _browser_socket(live_stack, phone)
        await asyncio.to_thread(_change_password, laptop, base)
        other_code = await _close_code(other)
        # Django re-keys the changing session, so its socket (opened with the old key) is
        # closed too; the browser holds the new cookie and its one retry (execClient) is
        # accepted, while the other session's retry is refused at the handshake.
        mine_code = await _close_code(mine)
        again = await _browser_socket(live_stack, laptop)
        answers = await _still_answers(again)
        with pytest.raises(websockets.exceptions.InvalidStatus):
            await _browser_socket(live_stack, phone)
        return other_code, mine_code, answers

    other_code, mine_code, answers = asyncio.run(scenario())
    assert other_code == 4401 and mine_code == 4401
    assert answers
    # Over HTTP too: the other session is signed out, the changing one is not.
    assert phone.get("/w/acme/").status_code == 302
    assert laptop.get("/w/acme/").status_code == 200


def test_a_password_reset_closes_every_signed_in_socket(live_stack, workspace_a, erin_editor):
    base = live_stack.http_url
    phone = signed_in_browser(base, erin_editor.email, PASSWORD)
    erin_editor.refresh_from_db()  # the token covers last_login, which signing in changed
    uid = urlsafe_base64_encode(force_bytes(erin_editor.pk))
    token = default_token_generator.make_token(erin_editor)

    def reset() -> None:
        with httpx.Client(base_url=base, follow_redirects=False) as anonymous:
            form = anonymous.get(f"/accounts/reset/{uid}/{token}/")  # -> set-password URL
            assert form.status_code == 302
            set_url = form.headers["location"]
            anonymous.get(set_url)
            done = anonymous.post(
                set_url,
                data={
                    "new_password1": NEW_PASSWORD,
                    "new_password2": NEW_PASSWORD,
                    "csrfmiddlewaretoken": anonymous.cookies["csrftoken"],
                },
                headers={"Referer": f"{base}{set_url}"},
            )
            assert done.status_code == 302 and done.headers["location"].endswith("/reset/done/")

    async def scenario() -> int:
        ws = await _browser_socket(live_stack, phone)
        await asyncio.to_thread(reset)
        return await _close_code(ws)

    assert asyncio.run(scenario()) == 4401


def _start(live_stack, token: str, flow_id: int) -> str:
    response = httpx.post(
        f"{live_stack.http_url}/api/w/acme/flows/{flow_id}/runs",
        json={"inputs": {"input": "x"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def _follow(url: str, headers: dict[str, str], events: list[dict], ended: threading.Event):
    """Read the stream; `ended` is set only if the server closed it (within 40 s)."""
    deadline = time.monotonic() + 40
    with httpx.stream("GET", url, headers=headers, timeout=20) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if time.monotonic() > deadline:
                return
    ended.set()


def test_an_sse_stream_stops_once_its_token_is_revoked(
    live_stack, workspace_a, erin_editor, token_for
):
    token = token_for(workspace_a, erin_editor)
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply=" slow" * 400, delay_ms=30)
    run_id = _start(live_stack, token, flow.pk)
    url = f"{live_stack.http_url}/api/w/acme/runs/{run_id}/stream"
    events: list[dict] = []
    ended = threading.Event()
    follower = threading.Thread(
        target=_follow, args=(url, {"Authorization": f"Bearer {token}"}, events, ended)
    )
    follower.start()
    deadline = time.monotonic() + 30
    while not any(e["event"] == "on_token" for e in events) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events, "the stream delivered nothing before the revocation"
    ApiToken.objects.filter(user=erin_editor).update(revoked_at=timezone.now())
    assert ended.wait(15), "the stream kept going after its token was revoked"
    follower.join()
    # It ended the stream, not the run: the run was neither cancelled nor failed by it (it
    # may have finished meanwhile on a slow machine; the stream did not show its end).
    assert Run.objects.get(pk=run_id).status in (RunStatus.RUNNING, RunStatus.SUCCEEDED)
    assert events[-1]["event"] != "completed"
    again = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 401


def test_an_sse_stream_of_a_session_stops_after_a_password_change(
    live_stack, workspace_a, erin_editor, token_for
):
    base = live_stack.http_url
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply=" slow" * 400, delay_ms=30)
    run_id = _start(live_stack, token_for(workspace_a, erin_editor), flow.pk)
    phone = signed_in_browser(base, erin_editor.email, PASSWORD)
    laptop = signed_in_browser(base, erin_editor.email, PASSWORD)
    events: list[dict] = []
    ended = threading.Event()
    follower = threading.Thread(
        target=_follow,
        args=(
            f"{base}/api/w/acme/runs/{run_id}/stream",
            {"Cookie": cookie_header(phone)},
            events,
            ended,
        ),
    )
    follower.start()
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events
    _change_password(laptop, base)
    assert ended.wait(15), "the stream kept going after the password changed"
    follower.join()
    assert Run.objects.get(pk=run_id).status in (RunStatus.RUNNING, RunStatus.SUCCEEDED)
    assert events[-1]["event"] != "completed"


def test_an_sse_resume_at_the_end_of_a_finished_run_sends_nothing_and_closes(
    live_stack, workspace_a, erin_editor, token_for
):
    token = token_for(workspace_a, erin_editor)
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="a b c", delay_ms=1)
    run_id = _start(live_stack, token, flow.pk)
    deadline = time.monotonic() + 30
    while Run.objects.get(pk=run_id).status != RunStatus.SUCCEEDED:
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.05)
    last = stored_log(run_id)[-1]["seq"]
    url = f"{live_stack.http_url}/api/w/acme/runs/{run_id}/stream"
    for after in (last, last + 5):
        events: list[dict] = []
        ended = threading.Event()
        _follow(
            url, {"Authorization": f"Bearer {token}", "Last-Event-ID": str(after)}, events, ended
        )
        assert ended.is_set() and events == []
