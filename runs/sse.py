"""`GET /api/w/<slug>/runs/<id>/stream`: a run's events as Server-Sent Events, and the
readers behind it that other streaming endpoints share (chat/calls.py, chat/openai_compat.py):
`follow_run` (every event of a run once, in order) and `wait_for_end`.

Each event's `id:` is its seq, so a reconnecting EventSource sends `Last-Event-ID` and the
stream resumes right after it. The log is the truth: the channel layer's events are passed
on only while they continue the reader's seq, and a gap sends it back to the log, so
dropped layer messages cost latency, never events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from accounts.api_auth import WorkspaceAuth, context, declared_role, minimum_role
from accounts.models import Role, Workspace
from accounts.selectors import access_still_valid
from runs import selectors
from runs.access import access_run
from runs.events import session_group
from runs.models import Run

WAKE_TIMEOUT = 1.0
KEEPALIVE_EVERY = 15

log = logging.getLogger(__name__)


def _authorise_and_load(request: HttpRequest, slug: str, run_id: str) -> Run | None:
    if WorkspaceAuth()(request) is None:
        return None
    minimum = declared_role(stream)
    assert minimum is not None
    return access_run(context(request).membership, run_id, minimum=minimum)


def access_check(request: HttpRequest) -> Callable[[], bool]:
    """A check, run every SESSION_RECHECK_SECONDS, that the stream's credential still grants
    access: a revoked token, a signed-out or password-changed session, a deactivated user or
    a removed membership end the stream as they end a WebSocket."""
    membership_id = context(request).membership.pk
    token = context(request).token
    session_key = None if token is not None else request.session.session_key

    def check() -> bool:
        return (
            access_still_valid(
                membership_id=membership_id,
                token_id=token.pk if token is not None else None,
                session_key=session_key,
            )
            is not None
        )

    return check


def _start_after(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after_seq") or "0"
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


@minimum_role(Role.VIEWER)  # viewers watch runs
async def stream(request: HttpRequest, slug: str, run_id: str) -> HttpResponseBase:
    run = await sync_to_async(_authorise_and_load)(request, slug, run_id)
    if run is None:
        return JsonResponse({"detail": "Unauthorized"}, status=401)
    return event_stream_response(
        context(request).workspace,
        run,
        after=_start_after(request),
        still_allowed=sync_to_async(access_check(request)),
    )


AccessCheck = Callable[[], Awaitable[bool]]


def sse_event(message: dict[str, Any]) -> str:
    """One run event as a Server-Sent Event: `id:` is its seq (what Last-Event-ID resumes)."""
    return f"id: {message['seq']}\nevent: {message['event']}\ndata: {json.dumps(message)}\n\n"


def event_stream_response(
    workspace: Workspace, run: Run, *, after: int, still_allowed: AccessCheck
) -> StreamingHttpResponse:
    """A run's events after seq `after` as an SSE response, to its `completed` event (the
    one-call run API answers its `stream: true` form with this too, so either resumes on
    `GET runs/<id>/stream` with Last-Event-ID)."""

    async def events() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        async for message in follow_run(workspace, run, after, still_allowed=still_allowed):
            yield ": keep-alive\n\n" if message is None else sse_event(message)

    return sse_response(events())


def sse_response(events: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def follow_run(
    workspace: Workspace,
    run: Run,
    after: int,
    *,
    still_allowed: AccessCheck | None = None,
) -> AsyncGenerator[dict[str, Any] | None, None]:
    """Every event of `run` after seq `after`, in order, each once, ending with `completed`
    (or at once, if the reader already has the whole log of a finished run); None after
    each KEEPALIVE_EVERY seconds without one. Ends early when `still_allowed` says the
    reader's access has ended.

    The log is the source of truth. The channel layer's messages carry the events: those
    that continue the reader's seq are passed on as they come (the log already holds them:
    persist, then publish); a gap (a dropped layer message) or a silent second sends the
    reader back to the log, so dropped layer messages cost latency, never events."""
    recheck_every = settings.FLOWDECK["SESSION_RECHECK_SECONDS"]
    run_id = str(run.pk)
    sent = after
    layer = get_channel_layer()
    channel = await layer.new_channel() if layer else None
    group = session_group(run.workspace_id, run.session_id)
    if layer and channel:
        await layer.group_add(group, channel)
    idle = 0.0
    checked_at = time.monotonic()
    read_log = True
    # One receive stays pending across waits: cancelling a pub/sub receive would
    # unsubscribe the channel (config.layers).
    wake: asyncio.Future | None = None
    try:
        while True:
            if still_allowed is not None and time.monotonic() - checked_at >= recheck_every:
                if not await still_allowed():
                    return  # access ended: the client's reconnect gets 401
                checked_at = time.monotonic()
            if read_log:
                page = await sync_to_async(selectors.event_messages_after)(workspace, run_id, sent)
                for message in page:
                    sent = message["seq"]
                    yield message
                    if message["event"] == "completed":
                        return
                if page:
                    idle = 0.0
                    continue
                if await sync_to_async(selectors.run_log_complete)(workspace, run_id, sent):
                    return  # resumed at (or past) the end of a finished run: nothing more
            read_log = True
            if layer and channel:
                if wake is None:
                    wake = asyncio.ensure_future(layer.receive(channel))
                done, _ = await asyncio.wait({wake}, timeout=WAKE_TIMEOUT)
                if done:
                    received = None
                    if wake.exception() is not None:  # the layer failed: the log still has it
                        log.warning("SSE wake-up failed: %r", wake.exception())
                    else:
                        received = _continuing(wake.result(), run_id, sent)
                    wake = None
                    if received is not None:
                        for message in received:
                            sent = message["seq"]
                            yield message
                            if message["event"] == "completed":
                                return
                        idle = 0.0
                        read_log = False  # the layer brought everything up to `sent`
                    continue
            else:
                await asyncio.sleep(WAKE_TIMEOUT)
            idle += WAKE_TIMEOUT
            if idle >= KEEPALIVE_EVERY:
                idle = 0.0
                yield None
    finally:
        if wake is not None:
            wake.cancel()
        if layer and channel:
            await layer.group_discard(group, channel)


def _continuing(message: Any, run_id: str, sent: int) -> list[dict[str, Any]] | None:
    """The events of run `run_id` in a layer message that come after seq `sent`, if they
    continue it without a gap (none: the message had nothing new for this run); None when
    they do not (a message was dropped) or the message is not a run's events: read the log."""
    events = message.get("events") if isinstance(message, dict) else None
    if not isinstance(events, list):
        return None
    mine = [
        e
        for e in events
        if isinstance(e, dict)
        and e.get("run_id") == run_id
        and isinstance(e.get("seq"), int)
        and e["seq"] > sent
    ]
    mine.sort(key=lambda e: e["seq"])
    if [e["seq"] for e in mine] != list(range(sent + 1, sent + 1 + len(mine))):
        return None
    return mine


async def wait_for_end(workspace: Workspace, run: Run, *, timeout: float) -> bool:
    """Whether `run` ended within `timeout` seconds, without reading its events: the layer's
    message carrying `completed` wakes the wait, and the run's row is read on that and at
    most once per WAKE_TIMEOUT otherwise (the layer may drop the message)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ended = sync_to_async(selectors.run_has_ended)
    layer = get_channel_layer()
    channel = await layer.new_channel() if layer else None
    group = session_group(run.workspace_id, run.session_id)
    if layer and channel:
        await layer.group_add(group, channel)
    wake: asyncio.Future | None = None
    try:
        while True:
            if await ended(workspace, str(run.pk)):
                return True
            now = loop.time()
            if now >= deadline:
                return False
            until = min(deadline, now + WAKE_TIMEOUT)
            if not (layer and channel):
                await asyncio.sleep(until - now)
                continue
            while (left := until - loop.time()) > 0:
                if wake is None:
                    wake = asyncio.ensure_future(layer.receive(channel))
                done, _ = await asyncio.wait({wake}, timeout=left)
                if not done:
                    break
                message = wake.result() if wake.exception() is None else None
                wake = None
                if _carries_completed(message):
                    break
    finally:
        if wake is not None:
            wake.cancel()
        if layer and channel:
            await layer.group_discard(group, channel)


def _carries_completed(message: Any) -> bool:
    events = message.get("events") if isinstance(message, dict) else None
    return any(isinstance(e, dict) and e.get("event") == "completed" for e in events or [])
