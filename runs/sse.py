"""`GET /api/w/<slug>/runs/<id>/stream`: a run's events as Server-Sent Events.

Each event's `id:` is its seq, so a reconnecting EventSource sends `Last-Event-ID` and the
stream resumes right after it. The log is the source: the channel layer only wakes the
stream up early, so dropped layer messages cost latency, never events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import (
    HttpRequest,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)

from accounts.api_auth import WorkspaceAuth, context, declared_role, minimum_role
from accounts.models import Role
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


def _access_check(request: HttpRequest) -> Callable[[], bool]:
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
    workspace = context(request).workspace
    after = _start_after(request)
    still_allowed = sync_to_async(_access_check(request))
    recheck_every = settings.FLOWDECK["SESSION_RECHECK_SECONDS"]

    async def events() -> AsyncIterator[str]:
        sent = after
        layer = get_channel_layer()
        channel = await layer.new_channel() if layer else None
        group = session_group(run.workspace_id, run.session_id)
        if layer and channel:
            await layer.group_add(group, channel)
        idle = 0.0
        checked_at = time.monotonic()
        # One receive stays pending across waits: cancelling a pub/sub receive would
        # unsubscribe the channel (config.layers).
        wake: asyncio.Future | None = None
        try:
            yield "retry: 1000\n\n"
            while True:
                if time.monotonic() - checked_at >= recheck_every:
                    if not await still_allowed():
                        return  # access ended: the client's reconnect gets 401
                    checked_at = time.monotonic()
                page = await sync_to_async(selectors.event_messages_after)(
                    workspace, str(run.pk), sent
                )
                for message in page:
                    sent = message["seq"]
                    yield f"id: {sent}\nevent: {message['event']}\ndata: {json.dumps(message)}\n\n"
                    if message["event"] == "completed":
                        return
                if page:
                    idle = 0.0
                    continue
                if await sync_to_async(selectors.run_log_complete)(workspace, str(run.pk), sent):
                    return  # resumed at (or past) the end of a finished run: nothing more
                if layer and channel:
                    if wake is None:
                        wake = asyncio.ensure_future(layer.receive(channel))
                    done, _ = await asyncio.wait({wake}, timeout=WAKE_TIMEOUT)
                    if done:
                        if wake.exception() is not None:  # the layer failed: the log still has it
                            log.warning("SSE wake-up failed: %r", wake.exception())
                        wake = None  # woken early: read the log again
                        continue
                else:
                    await asyncio.sleep(WAKE_TIMEOUT)
                idle += WAKE_TIMEOUT
                if idle >= KEEPALIVE_EVERY:
                    idle = 0.0
                    yield ": keep-alive\n\n"
        finally:
            if wake is not None:
                wake.cancel()
            if layer and channel:
                await layer.group_discard(group, channel)

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
