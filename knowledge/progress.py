"""Ingestion progress to the page, after commit, on one channel-layer group per knowledge
base (`kb.<workspace_id>.<kb_id>`, served by knowledge.consumers).

The database row is the truth: these messages only hurry the news along (the channel layer
is at-most-once); a watcher that reconnects reads the rows again."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from knowledge.models import KnowledgeBase, KnowledgeDocument

log = logging.getLogger(__name__)

DOCUMENT_EVENT = "knowledge.document"  # the consumer's handler: knowledge_document


def kb_group(workspace_id: int, kb_id: int) -> str:
    """ASCII, well under Channels' 100-character limit."""
    return f"kb.{int(workspace_id)}.{int(kb_id)}"


def document_state(document: KnowledgeDocument) -> dict[str, Any]:
    """A document as the page and the API show where it stands (docs/knowledge.md)."""
    return {
        "id": document.pk,
        "knowledge_base": document.knowledge_base_id,
        "name": document.name,
        "format": document.format,
        "size": document.size,
        "status": document.status,
        "error_code": document.error_code,
        "error_message": document.error_message,
        "pages": document.pages,
        "chunk_count": document.chunk_count,
        "progress": {"done": document.progress_done, "total": document.progress_total},
        "created_at": document.created_at.isoformat() if document.created_at else None,
        "updated_at": document.updated_at.isoformat() if document.updated_at else None,
    }


def _send(group: str, messages: list[dict[str, Any]]) -> None:
    layer = get_channel_layer()
    if layer is None or not messages:
        return

    async def send_all() -> None:
        for message in messages:
            await layer.group_send(group, message)

    try:
        async_to_sync(send_all)()
    except Exception as exc:  # Redis away: watchers read the rows again
        log.warning("publishing knowledge progress failed: %r", exc)


def publish_documents(workspace_id: int, kb_id: int, document_ids: Iterable[int]) -> None:
    """Send the committed state of these documents to their knowledge base's watchers."""
    rows = KnowledgeDocument.objects.filter(
        workspace_id=workspace_id, knowledge_base_id=kb_id, pk__in=list(document_ids)
    )
    _send(
        kb_group(workspace_id, kb_id),
        [{"type": DOCUMENT_EVENT, "document": document_state(row)} for row in rows],
    )


def publish_documents_after_commit(kb: KnowledgeBase, document_ids: list[int]) -> None:
    workspace_id, kb_id = kb.workspace_id, kb.pk
    transaction.on_commit(lambda: publish_documents(workspace_id, kb_id, document_ids))


def publish_deleted_after_commit(workspace_id: int, kb_id: int, document_id: int) -> None:
    message = {
        "type": DOCUMENT_EVENT,
        "document": {"id": document_id, "knowledge_base": kb_id, "status": "deleted"},
    }
    transaction.on_commit(lambda: _send(kb_group(workspace_id, kb_id), [message]))
