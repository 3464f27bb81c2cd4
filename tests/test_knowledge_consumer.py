"""The knowledge WebSocket on its own (WebsocketCommunicator through the whole ASGI stack):
a member watches a knowledge base of their workspace and gets a snapshot, then committed
changes; another workspace's knowledge base is the same `not_found` as a missing one."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from accounts.models import User
from knowledge.progress import DOCUMENT_EVENT, kb_group
from tests.knowledge_helpers import make_kb

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(user: User, path: str) -> WebsocketCommunicator:
    from config.asgi import application

    client = Client()
    await sync_to_async(client.force_login)(
        user, backend="django.contrib.auth.backends.ModelBackend"
    )
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    return communicator


async def test_watch_sends_a_snapshot_then_committed_changes(
    workspace_a: Any, alice_owner: User, bob_viewer: User
) -> None:
    kb = await sync_to_async(make_kb)(workspace_a, alice_owner)
    ws = await connect(bob_viewer, "/ws/w/acme/knowledge")
    try:
        await ws.send_json_to({"action": "watch", "knowledge_base": kb.pk})
        snapshot = await ws.receive_json_from(timeout=10)
        assert snapshot == {"event": "snapshot", "knowledge_base": kb.pk, "documents": []}
        document = {"id": 5, "knowledge_base": kb.pk, "status": "parsing"}
        await get_channel_layer().group_send(
            kb_group(workspace_a.pk, kb.pk), {"type": DOCUMENT_EVENT, "document": document}
        )
        assert await ws.receive_json_from(timeout=10) == {
            "event": "document",
            "knowledge_base": kb.pk,
            "document": document,
        }
    finally:
        await ws.disconnect()


async def test_another_workspaces_knowledge_base_is_not_found_and_nothing_is_joined(
    workspace_a: Any, alice_owner: User, workspace_b: Any, mallory_owner: User
) -> None:
    theirs = await sync_to_async(make_kb)(workspace_b, mallory_owner, "Theirs")
    ws = await connect(alice_owner, f"/ws/w/acme/knowledge?kb={theirs.pk}")
    try:
        reply = await ws.receive_json_from(timeout=10)
        assert reply["event"] == "rejected" and reply["code"] == "not_found"
        await get_channel_layer().group_send(
            kb_group(workspace_b.pk, theirs.pk),
            {"type": DOCUMENT_EVENT, "document": {"id": 1, "knowledge_base": theirs.pk}},
        )
        assert await ws.receive_nothing(timeout=0.5)
        await ws.send_to(text_data="not json")
        assert (await ws.receive_json_from(timeout=10))["code"] == "invalid_json"
        await ws.send_json_to({"action": "watch", "knowledge_base": "x"})
        assert (await ws.receive_json_from(timeout=10))["code"] == "invalid_message"
    finally:
        await ws.disconnect()
