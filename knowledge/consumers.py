"""The knowledge WebSocket: `/ws/w/<slug>/knowledge?kb=<id>` (docs/knowledge.md).

A member (viewer and up) watches the ingestion of one knowledge base's documents: on
`watch` (or `?kb=` at connect) the consumer checks the knowledge base through the access
layer, joins its group (`kb.<workspace_id>.<kb_id>`) and sends a snapshot of every
document from the database (the truth); then each committed change arrives as a
`document` message. The channel layer is at-most-once: a client that reconnects gets a
new snapshot.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import PermissionDenied
from django.http import Http404

from accounts.models import ApiToken, Membership
from accounts.selectors import access_still_valid
from accounts.tenancy import resolve_membership, token_used_elsewhere
from audit import context as audit_context
from knowledge import selectors
from knowledge.access import access_knowledge_base
from knowledge.progress import document_state, kb_group

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4096
MAX_WATCHED = 20
RECHECK_SECONDS = 2.0


def in_db_thread(fn: Any) -> Any:
    return database_sync_to_async(fn, thread_sensitive=False)


class KnowledgeConsumer(AsyncJsonWebsocketConsumer):
    membership: Membership

    async def connect(self) -> None:
        audit_context.from_scope(self.scope)
        slug = self.scope["url_route"]["kwargs"]["slug"]
        membership = await self._authorise(slug)
        if membership is None:
            await self.close()  # before accept: the handshake is refused
            return
        self.membership = membership
        self.checked_at = time.monotonic()
        self.watching: set[str] = set()
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        requested = (query.get("kb") or [""])[0]
        if requested:
            await self._watch(requested)

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "watching", set()):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:  # Redis away: the membership expires with it anyway
                log.warning("group_discard failed", exc_info=True)

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

    @in_db_thread
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
        self.membership = membership
        self.checked_at = time.monotonic()
        return True

    @in_db_thread
    def _snapshot(self, kb_id: Any) -> tuple[int, int, list[dict[str, Any]]]:
        kb = access_knowledge_base(self.membership, kb_id)
        documents = [document_state(d) for d in selectors.documents_of(kb)[:2000]]
        return kb.workspace_id, kb.pk, documents

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None or len(text_data) > MAX_MESSAGE_BYTES:
            await self._reject("invalid_message", "Send small JSON text frames.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self._reject("invalid_json", "That frame is not valid JSON.")
            return
        if not isinstance(content, dict) or content.get("action") != "watch":
            await self._reject(
                "invalid_message", 'Send {"action": "watch", "knowledge_base": <id>}.'
            )
            return
        await self._watch(content.get("knowledge_base"))

    async def _watch(self, kb_id: Any) -> None:
        if not await self._still_authorised():
            await self.close(code=4401)
            return
        try:
            kb_id = int(kb_id)
        except (TypeError, ValueError):
            await self._reject("invalid_message", "`knowledge_base` must be an id.")
            return
        try:
            workspace_id, kb_pk, documents = await self._snapshot(kb_id)
        except (Http404, PermissionDenied):
            await self._reject("not_found", "No such knowledge base here.")
            return
        group = kb_group(workspace_id, kb_pk)
        if group not in self.watching:
            if len(self.watching) >= MAX_WATCHED:
                await self._reject("too_many", f"Watch at most {MAX_WATCHED} knowledge bases.")
                return
            await self.channel_layer.group_add(group, self.channel_name)
            self.watching.add(group)
        await self.send_json({"event": "snapshot", "knowledge_base": kb_pk, "documents": documents})

    async def _reject(self, code: str, message: str) -> None:
        await self.send_json({"event": "rejected", "code": code, "message": message})

    async def knowledge_document(self, message: dict[str, Any]) -> None:
        """A committed change of one document (knowledge.progress). A member who signed
        out or lost membership meanwhile gets nothing more: the socket closes."""
        if (
            time.monotonic() - self.checked_at > RECHECK_SECONDS
            and not await self._still_authorised()
        ):
            await self.close(code=4401)
            return
        document = message["document"]
        await self.send_json(
            {
                "event": "document",
                "knowledge_base": document.get("knowledge_base"),
                "document": document,
            }
        )
