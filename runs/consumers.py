"""The execution WebSocket: `/ws/w/<slug>/exec?session=<id>` (docs/protocol.md).

Delivery is exact per run and connection: the consumer remembers the last seq it sent for
each run it follows and only ever sends seq + 1. A live event that skips ahead (the channel
layer dropped messages: over capacity, group expiry, a Redis restart) is preceded by the
missing events read from the log; anything at or below what was sent is dropped. A ticker
also compares each followed run's committed `last_seq` with what was sent, so even a lost
final event arrives, and it closes the socket within seconds when the user signs out, is
deactivated, loses membership or has the token revoked.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone

from accounts.models import ApiToken, Membership
from accounts.selectors import access_still_valid
from accounts.tenancy import resolve_membership, scoped, token_used_elsewhere
from audit import context as audit_context
from chat import services as chat_services
from config.errors import SERVICE_UNAVAILABLE, UNAVAILABLE_MESSAGE
from config.jsontext import UnstorableText, check_text
from flows.access import access_flow
from runs import approvals, schemas, selectors, services
from runs.access import access_run
from runs.events import session_group
from runs.models import Run, RunStatus

log = logging.getLogger(__name__)
T = TypeVar("T")

CLOSE_UNAUTHORISED = 4401


def in_db_thread(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Run blocking ORM work in the thread pool, not in Channels' one shared database
    thread: with it, every connection's queries queued behind every other's, and a
    consumer waiting there delivers nothing (measured: 50 runs starting at once delayed
    live tokens by about a second). Each call is its own unit of work (no transaction
    spans two calls), so it may run in any thread."""
    return database_sync_to_async(fn, thread_sensitive=False)


class Rejected(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.body = {"event": "rejected", "code": code, "message": message, **extra}


# The current message's `request_id` (runs.schemas): the `accepted` or `rejected` it causes
# carries it back, so replies are matched to requests by id, not by order (a refused cancel
# once failed the wrong pending run).
_request_id: contextvars.ContextVar[str | int | None] = contextvars.ContextVar(
    "request_id", default=None
)


def with_request_id(reply: dict[str, Any]) -> dict[str, Any]:
    """`reply` with the current message's request_id, if it had one."""
    request_id = _request_id.get()
    return reply if request_id is None else {**reply, "request_id": request_id}


class RunFollow:
    """Delivery state of one run on one connection."""

    def __init__(self, run_id: str, workspace_id: int, session_id: str, sent: int) -> None:
        self.run_id = run_id
        self.group = session_group(workspace_id, session_id)
        self.sent = sent
        self.committed_last_tick = 0  # the run's committed last_seq at the previous tick
        self.finished = False
        self.lock = asyncio.Lock()


class ExecConsumer(AsyncJsonWebsocketConsumer):
    membership: Membership

    async def connect(self) -> None:
        audit_context.from_scope(self.scope)  # IP and user agent for audit entries
        slug = self.scope["url_route"]["kwargs"]["slug"]
        membership = await self._authorise(slug)
        if membership is None:
            await self.close()  # before accept: the handshake is refused (403)
            return
        self.membership = membership
        self.workspace = membership.workspace
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        requested = (query.get("session") or [""])[0]
        try:
            self.session_id = (
                services.clean_session_id(requested) if requested else services.new_session_id()
            )
        except services.RunRefused:
            await self.close()
            return
        self.follows: dict[str, RunFollow] = {}
        self.groups_joined: set[str] = set()
        await self._join(session_group(self.workspace.pk, self.session_id))
        await self.accept()
        await self.send_json({"event": "session", "session_id": self.session_id})
        self.ticker = asyncio.create_task(self._tick())

    async def disconnect(self, code: int) -> None:
        for task in (getattr(self, "ticker", None), getattr(self, "replay_task", None)):
            if task is not None:
                task.cancel()
        for group in getattr(self, "groups_joined", set()):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:  # Redis away: the membership expires with it anyway
                log.warning("group_discard failed", exc_info=True)

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.add(group)

    # --- auth ---------------------------------------------------------------------------

    @in_db_thread
    def _authorise(self, slug: str) -> Membership | None:
        user = self.scope.get("user")
        token: ApiToken | None = self.scope.get("auth_token")
        if token is not None and token.workspace.slug != slug:
            token_used_elsewhere(token.user, token.pk, slug)
            return None
        try:
            return resolve_membership(user, slug)
        except Http404:
            return None

    def _still_authorised(self) -> bool:
        token: ApiToken | None = self.scope.get("auth_token")
        session = self.scope.get("session")
        membership = access_still_valid(
            membership_id=self.membership.pk,
            token_id=token.pk if token is not None else None,
            session_key=getattr(session, "session_key", None),
        )
        if membership is None:
            return False
        self.membership = membership  # role changes apply to the next message
        return True

    # --- frames in ----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        limit = settings.FLOWDECK["WS_MAX_MESSAGE_BYTES"]
        _request_id.set(None)  # the consumer's task handles every message: start clean
        try:
            if text_data is None:
                raise Rejected("invalid_message", "Send JSON text frames.")
            if len(text_data) > limit:
                raise Rejected("too_large", f"Messages are limited to {limit} bytes.")
            try:
                content = json.loads(text_data)
            except (ValueError, RecursionError) as exc:
                raise Rejected("invalid_json", "That frame is not valid JSON.") from exc
            try:
                check_text(content)
            except UnstorableText as exc:
                raise Rejected("invalid_text", str(exc)) from exc
            _request_id.set(schemas.request_id_of(content))
            await self.receive_json(content)
        except schemas.MessageRefused as exc:
            await self.send_json(with_request_id(Rejected(exc.code, exc.message).body))
        except Rejected as exc:
            await self.send_json(with_request_id(exc.body))
        except SERVICE_UNAVAILABLE:  # rolled back: the client may simply try again
            log.warning("websocket message failed: a service is unavailable", exc_info=True)
            await self.send_json(with_request_id(Rejected("unavailable", UNAVAILABLE_MESSAGE).body))
        except Exception:
            log.exception("websocket message failed")
            await self.send_json(
                with_request_id(
                    Rejected("server_error", "The server failed to handle that message.").body
                )
            )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        message = schemas.parse_message(content)
        match message:
            case schemas.RunMessage() | schemas.GraphMessage():
                await self._run(message)
            case schemas.ResumeMessage():
                await self._resume(message)
            case schemas.CancelMessage():
                await self._cancel(message)
            case schemas.DecideMessage():
                await self._decide(message)
            case schemas.RerunMessage():
                await self._rerun(message)
            case schemas.ReplayMessage():
                await self._replay(message)
            case schemas.ReplayPauseMessage():
                await self._replay_pause(message)
            case schemas.ReplayPlayMessage():
                await self._replay_play(message)
            case _:
                raise TypeError(f"no handler for {type(message).__name__}")

    async def _run(self, message: schemas.RunMessage | schemas.GraphMessage) -> None:
        try:
            run = await self._start(message)
        except services.RunRefused as exc:
            raise Rejected(
                exc.code, exc.message, **({"problems": exc.problems} if exc.problems else {})
            ) from exc
        except PermissionDenied as exc:
            raise Rejected("forbidden", str(exc)) from exc
        except Http404 as exc:
            raise Rejected("not_found", "No such flow in this workspace.") from exc
        await self._accepted(str(run.pk), run.session_id)

    async def _accepted(self, run_id: str, session_id: str | None = None) -> None:
        """Follow a run this connection started from seq 1, and say it was accepted.

        A conversation's turn runs in the conversation's session, not this socket's: its
        group is joined before the reply, so no event of it can be missed."""
        follow = self.follows.setdefault(
            run_id, RunFollow(run_id, self.workspace.pk, session_id or self.session_id, 0)
        )
        joined = follow.group in self.groups_joined
        if not joined:
            await self._join(follow.group)
        await self.send_json(
            with_request_id({"event": "accepted", "run_id": run_id, "session_id": self.session_id})
        )
        if not joined:  # events sent before the join are in the log: send them now
            async with follow.lock:
                await self._fill(follow, upto=None)

    @in_db_thread
    def _start(self, message: schemas.RunMessage | schemas.GraphMessage) -> Run:
        # The service checks the role; access_flow only that the flow is this workspace's.
        flow = access_flow(self.membership, message.flow) if message.flow is not None else None
        if isinstance(message, schemas.GraphMessage):
            graph = {"nodes": message.nodes, "edges": message.edges}
            version = None
        else:
            graph, version = None, message.version
            if message.conversation is not None and flow is not None:
                return chat_services.conversation_turn_start(
                    workspace=self.workspace,
                    acting=self.membership,
                    flow=flow,
                    version_number=version,
                    inputs=message.inputs,
                    conversation_id=message.conversation,
                )
        return services.run_start(
            workspace=self.workspace,
            acting=self.membership,
            session_id=self.session_id,
            flow=flow,
            version_number=version,
            graph=graph,
            inputs=message.inputs,
            api_token=self.scope.get("auth_token"),
        )

    @in_db_thread
    def _load_run(self, run_id: str) -> Run:
        try:
            return access_run(self.membership, run_id)
        except Http404 as exc:
            raise Rejected("not_found", "No such run in this workspace.") from exc

    async def _resume(self, message: schemas.ResumeMessage) -> None:
        run = await self._load_run(message.run_id)
        run_id = str(run.pk)
        follow = self.follows.get(run_id)
        if follow is None:
            follow = self.follows[run_id] = RunFollow(run_id, run.workspace_id, run.session_id, 0)
            await in_db_thread(services.run_watched)(
                workspace=self.workspace, acting=self.membership, run=run
            )
        # Subscribe first, then read the log: nothing can fall between the two.
        if follow.group not in self.groups_joined:
            await self._join(follow.group)
        async with follow.lock:
            follow.sent = max(follow.sent, message.after_seq)
            await self._fill(follow, upto=None)

    async def _cancel(self, message: schemas.CancelMessage) -> None:
        run = await self._load_run(message.run_id)
        try:
            await in_db_thread(services.run_cancel)(
                workspace=self.workspace, acting=self.membership, run=run
            )
        except PermissionDenied as exc:
            raise Rejected("forbidden", str(exc)) from exc

    async def _decide(self, message: schemas.DecideMessage) -> None:
        """Approve or reject a run's waiting approval (runs.approvals)."""
        run = await self._load_run(message.run_id)
        edited = {"value": message.value} if "value" in message.model_fields_set else {}
        try:
            approval = await in_db_thread(approvals.approval_decide)(
                workspace=self.workspace,
                acting=self.membership,
                run_id=run.pk,
                node_id=message.node_id,
                approve=message.decision == "approve",
                comment=message.comment,
                **edited,
            )
        except approvals.ApprovalRefused as exc:
            raise Rejected(exc.code, exc.message) from exc
        except PermissionDenied as exc:
            raise Rejected("forbidden", str(exc)) from exc
        await self.send_json(
            with_request_id(
                {
                    "event": "decided",
                    "run_id": str(run.pk),
                    "node_id": approval.node_id,
                    "decision": approval.status,
                }
            )
        )

    async def _rerun(self, message: schemas.RerunMessage) -> None:
        """Re-run a run (same version and inputs), optionally from one node onwards."""
        original = await self._load_run(message.run_id)
        try:
            run = await in_db_thread(services.run_rerun)(
                workspace=self.workspace,
                acting=self.membership,
                run=original,
                session_id=self.session_id,
                from_node=message.from_node,
            )
        except services.RunRefused as exc:
            raise Rejected(exc.code, exc.message) from exc
        except PermissionDenied as exc:
            raise Rejected("forbidden", str(exc)) from exc
        await self._accepted(str(run.pk))

    # --- replay: a finished run played back from its log, nothing else is touched --------

    async def _replay(self, message: schemas.ReplayMessage) -> None:
        run = await self._load_run(message.run_id)
        if not run.is_finished:
            raise Rejected("not_finished", "Only finished runs can be replayed; resume live runs.")
        speed, from_seq = message.speed, message.from_seq
        old = getattr(self, "replay_task", None)
        if old is not None:
            old.cancel()
        self.replay_id = getattr(self, "replay_id", 0) + 1
        self.replay_playing = asyncio.Event()
        self.replay_playing.set()
        await in_db_thread(services.run_replayed)(
            workspace=self.workspace, acting=self.membership, run=run
        )
        await self.send_json(
            {
                "event": "replay_started",
                "run_id": str(run.pk),
                "replay": self.replay_id,
                "speed": speed,
                "from_seq": from_seq,
                "last_seq": run.last_seq,
            }
        )
        self.replay_task = asyncio.create_task(
            self._play(str(run.pk), None if speed == "instant" else float(speed), from_seq)
        )

    async def _replay_pause(self, message: schemas.ReplayPauseMessage) -> None:
        if getattr(self, "replay_task", None) is None:
            raise Rejected("no_replay", "Nothing is being replayed.")
        self.replay_playing.clear()

    async def _replay_play(self, message: schemas.ReplayPlayMessage) -> None:
        if getattr(self, "replay_task", None) is None:
            raise Rejected("no_replay", "Nothing is being replayed.")
        self.replay_playing.set()

    async def _play(self, run_id: str, speed: float | None, from_seq: int) -> None:
        """Send the log in order: up to `from_seq` at once (a seek), then at the original
        pace divided by `speed` (None: all at once). Gaps are capped at a minute."""
        replay_id, sent, previous = self.replay_id, 0, None
        while True:
            page = await in_db_thread(selectors.event_messages_after)(self.workspace, run_id, sent)
            for message in page:
                ts = datetime.fromisoformat(message["ts"])
                if speed is not None and message["seq"] > from_seq and previous is not None:
                    await asyncio.sleep(min((ts - previous).total_seconds() / speed, 60.0))
                await self.replay_playing.wait()
                previous = ts
                sent = message["seq"]
                await self.send_json({**message, "replay": replay_id})
            if len(page) < selectors.EVENT_PAGE:
                break
        await self.send_json({"event": "replay_finished", "run_id": run_id, "replay": replay_id})

    # --- frames out ---------------------------------------------------------------------

    async def run_events(self, message: dict) -> None:
        """Live events of one run from the session group, in seq order."""
        for event in message.get("events") or []:
            if isinstance(event, dict):
                await self._deliver(event)

    async def _deliver(self, event: dict) -> None:
        run_id, seq = event.get("run_id"), event.get("seq")
        if not isinstance(seq, int) or not isinstance(run_id, str):
            return
        follow = self.follows.get(run_id)
        if follow is None:
            if seq != 1:
                return  # not ours to follow: the client resumes it explicitly if it wants it
            follow = self.follows[run_id] = RunFollow(run_id, self.workspace.pk, self.session_id, 0)
        async with follow.lock:
            if seq <= follow.sent:
                return
            if seq > follow.sent + 1:
                await self._fill(follow, upto=seq - 1)
                if seq <= follow.sent:
                    return
            await self._send_event(follow, event)

    async def _send_event(self, follow: RunFollow, event: dict) -> None:
        if event["seq"] != follow.sent + 1:
            return  # never send out of order; the next fill will bring it
        await self.send_json(event)
        follow.sent = event["seq"]
        if event.get("event") == "completed":
            follow.finished = True

    async def _fill(self, follow: RunFollow, upto: int | None) -> None:
        """Send logged events after follow.sent (up to `upto`); caller holds follow.lock."""
        while True:
            page = await in_db_thread(selectors.event_messages_after)(
                self.workspace, follow.run_id, follow.sent, upto_seq=upto
            )
            for event in page:
                await self._send_event(follow, event)
            if len(page) < selectors.EVENT_PAGE:
                return

    @in_db_thread
    def _recheck(self, run_ids: list[str]) -> tuple[bool, dict[str, int]]:
        """One trip to the database per tick: still authorised, and committed seqs."""
        if not self._still_authorised():
            return False, {}
        return True, self._committed_seqs(run_ids) if run_ids else {}

    def _committed_seqs(self, run_ids: list[str]) -> dict[str, int]:
        """Committed last_seq per run; also ends runs whose worker vanished (lease lapsed)."""
        now = timezone.now()
        rows = scoped(Run, self.workspace).filter(pk__in=run_ids)
        committed = {}
        for pk, last, status, lease in rows.values_list(
            "pk", "last_seq", "status", "lease_expires_at"
        ):
            if status == RunStatus.RUNNING and lease is not None and lease < now:
                services.reap_run(pk)  # watchers need not wait for the periodic reaper
                last = rows.values_list("last_seq", flat=True).get(pk=pk)
            committed[str(pk)] = last
        return committed

    async def _tick(self) -> None:
        # Jittered, so connections opened together do not all query at the same instant.
        interval = settings.FLOWDECK["SESSION_RECHECK_SECONDS"]
        while True:
            await asyncio.sleep(interval * random.uniform(0.75, 1.25))
            try:
                open_follows = [f for f in self.follows.values() if not f.finished]
                authorised, committed = await self._recheck([f.run_id for f in open_follows])
                if not authorised:
                    await self.close(code=CLOSE_UNAUTHORISED)
                    return
                groups = {follow.group for follow in open_follows}
                for follow in open_follows:
                    # Fill only what was committed a whole tick ago and still has not been
                    # sent: events in flight right now are on their way, and a fill for
                    # them would hold up the live stream behind a query.
                    if follow.sent < follow.committed_last_tick:
                        async with follow.lock:
                            await self._fill(follow, upto=None)
                    follow.committed_last_tick = committed.get(follow.run_id, 0)
                for group in groups:  # re-join: survives Redis restarts
                    await self.channel_layer.group_add(group, self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("websocket tick failed", exc_info=True)
