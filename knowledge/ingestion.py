"""Ingestion of one document: parse -> split -> embed (in batches) -> index.

Idempotent and restartable. The worker holds a lease on the document row, renewed at every
step; every write checks the lease in the same transaction, so a worker that lost it (its
lease ran out and the reaper handed the document to another) writes nothing more. What a
killed worker had made is kept: chunks made with the knowledge base's current chunking
settings are not made again (they are written in one transaction, unique per document and
index), and chunks that have their embedding are not sent to the endpoint again. Only
when everything is there do the document's chunks become searchable, all at once.

Failures end the document `failed` with a code and a sentence (parse errors from
knowledge.parsing, endpoint errors from knowledge.embeddings); its chunks stay unsearchable,
and `document_retry` resumes from what was kept.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from knowledge import progress
from knowledge.embeddings import EmbeddingError, embed_documents, embeddings_for_kb
from knowledge.models import Chunk, DocumentStatus, KnowledgeBase, KnowledgeDocument
from knowledge.parsing import FORMATS, ParseError, parse_file
from knowledge.splitting import split_sections
from knowledge.vectorstore import VectorStore, get_store

log = logging.getLogger(__name__)

INTERNAL_ERROR = (
    "Ingestion failed unexpectedly. Retry it; if it fails again, tell an administrator."
)
# Queued documents whose task was not picked up this long are sent again (a broker that
# restarted empty); duplicates are harmless (the lease).
REDISPATCH_AFTER = timedelta(seconds=60)


class LeaseLost(Exception):
    """Another worker holds the document now (or it was deleted or re-queued)."""


def _config() -> dict[str, int]:
    return settings.FLOWDECK_KNOWLEDGE


def _lease_until() -> Any:
    return timezone.now() + timedelta(seconds=_config()["LEASE_SECONDS"])


def claim(document_id: int) -> str | None:
    """Take the document's lease if it is ours to ingest; its token, or None."""
    with transaction.atomic():
        document = (
            KnowledgeDocument.objects.select_for_update()
            .select_related("knowledge_base")
            .filter(pk=document_id)
            .first()
        )
        if document is None or document.status in (DocumentStatus.FAILED, DocumentStatus.INDEXED):
            return None  # deleted; failed waits for a retry; indexed is done
        now = timezone.now()
        if document.lease_token and document.lease_expires_at and document.lease_expires_at > now:
            return None  # a live worker holds it
        token = uuid.uuid4().hex
        document.lease_token = token
        document.lease_expires_at = _lease_until()
        document.save(update_fields=["lease_token", "lease_expires_at", "updated_at"])
        return token


def _hold(document_id: int, token: str, **changes: Any) -> KnowledgeDocument:
    """Inside a transaction: lock the document, check the lease is still ours, renew it and
    apply `changes`."""
    document = (
        KnowledgeDocument.objects.select_for_update()
        .select_related("knowledge_base")
        .filter(pk=document_id)
        .first()
    )
    if document is None or document.lease_token != token:
        raise LeaseLost(document_id)
    document.lease_expires_at = _lease_until()
    for name, value in changes.items():
        setattr(document, name, value)
    document.save(update_fields=["lease_expires_at", "updated_at", *changes])
    return document


def _publish(document: KnowledgeDocument) -> None:
    workspace_id, kb_id, document_id = (
        document.workspace_id,
        document.knowledge_base_id,
        document.pk,
    )
    transaction.on_commit(lambda: progress.publish_documents(workspace_id, kb_id, [document_id]))


def ingest(document_id: int, *, store: VectorStore | None = None) -> str:
    """Ingest the document if it is ours to; what happened ("indexed", "failed",
    "skipped", "lease_lost")."""
    token = claim(document_id)
    if token is None:
        return "skipped"
    try:
        _ingest(document_id, token, store or get_store())
    except LeaseLost:
        log.info("knowledge document %s: lease lost, stopping", document_id)
        return "lease_lost"
    except ParseError as exc:
        return _fail(document_id, token, exc.code, str(exc))
    except EmbeddingError as exc:
        return _fail(document_id, token, exc.code, exc.message)
    except Exception:
        log.exception("knowledge document %s: ingestion failed", document_id)
        return _fail(document_id, token, "internal_error", INTERNAL_ERROR)
    return "indexed"


def _fail(document_id: int, token: str, code: str, message: str) -> str:
    try:
        with transaction.atomic():
            document = _hold(
                document_id,
                token,
                status=DocumentStatus.FAILED,
                error_code=code[:64],
                error_message=message[:1000],
                lease_token="",
                lease_expires_at=None,
            )
            Chunk.objects.filter(document_id=document_id).update(searchable=False)
            _publish(document)
    except LeaseLost:
        return "lease_lost"
    return "failed"


def _ingest(document_id: int, token: str, store: VectorStore) -> None:
    with transaction.atomic():
        document = _hold(document_id, token, error_code="", error_message="")
    kb = document.knowledge_base
    if not (
        document.chunking_fingerprint == kb.chunking_fingerprint
        and document.chunk_count > 0
        and Chunk.objects.filter(document_id=document_id).count() == document.chunk_count
    ):
        _chunk(document, token, kb)
    if kb.has_embeddings:
        _embed(document_id, token, store)
    with transaction.atomic():
        document = _hold(document_id, token)
        kb = KnowledgeBase.objects.select_for_update().get(pk=document.knowledge_base_id)
        if (document.chunking_fingerprint, document.embedding_fingerprint) != (
            kb.chunking_fingerprint,
            kb.embedding_fingerprint,
        ):
            raise LeaseLost(document_id)  # settings changed meanwhile: a re-index follows
        Chunk.objects.filter(document_id=document_id).update(searchable=True)
        KnowledgeBase.objects.filter(pk=kb.pk).update(version=F("version") + 1)
        document = _hold(
            document_id,
            token,
            status=DocumentStatus.INDEXED,
            progress_done=document.chunk_count,
            progress_total=document.chunk_count,
            indexed_at=timezone.now(),
            lease_token="",
            lease_expires_at=None,
        )
        _publish(document)


def _read(document: KnowledgeDocument) -> bytes:
    with document.file.open("rb") as handle:
        return handle.read(_config()["MAX_FILE_BYTES"] + 1)


def _parse_name(document: KnowledgeDocument) -> str:
    """The name to parse by: the document's own, with its format's extension when a
    rename (a text document titled "FAQ") lost it. The format was sniffed at upload."""
    extension = document.name.rsplit(".", 1)[-1].lower() if "." in document.name else ""
    if FORMATS.get(extension) == document.format:
        return document.name
    fallback = next(ext for ext, fmt in FORMATS.items() if fmt == document.format)
    return f"{document.name}.{fallback}"


def _chunk(document: KnowledgeDocument, token: str, kb: KnowledgeBase) -> None:
    with transaction.atomic():
        document = _hold(document.pk, token, status=DocumentStatus.PARSING)
        _publish(document)
    parsed = parse_file(_parse_name(document), _read(document))
    drafts = split_sections(
        parsed.sections, chunk_size=kb.chunk_size, chunk_overlap=kb.chunk_overlap
    )
    if not drafts:
        raise ParseError("no_text", "The document has no text that could be extracted.")
    cap = _config()["MAX_CHUNKS_PER_DOCUMENT"]
    if len(drafts) > cap:
        raise ParseError(
            "too_large",
            f"The document makes {len(drafts):,} chunks; at most {cap:,} are allowed "
            "(raise the chunk size or split the file).",
        )
    with transaction.atomic():
        document = _hold(document.pk, token)
        Chunk.objects.filter(document_id=document.pk).delete()
        Chunk.objects.bulk_create(
            [
                Chunk(
                    workspace_id=document.workspace_id,
                    knowledge_base_id=document.knowledge_base_id,
                    document_id=document.pk,
                    index=draft.index,
                    text=draft.text,
                    page=draft.page,
                    heading=(draft.heading or "")[:500],
                    content_hash=draft.content_hash,
                )
                for draft in drafts
            ],
            batch_size=500,
        )
        _hold(
            document.pk,
            token,
            pages=parsed.pages,
            chunk_count=len(drafts),
            chunking_fingerprint=kb.chunking_fingerprint,
            embedding_fingerprint="",
            progress_done=0,
            progress_total=len(drafts),
        )


def _embed(document_id: int, token: str, store: VectorStore) -> None:
    with transaction.atomic():
        document = _hold(document_id, token, status=DocumentStatus.EMBEDDING)
        kb = document.knowledge_base
        if document.embedding_fingerprint != kb.embedding_fingerprint:
            # Made with other settings (or never): every chunk needs a new vector.
            Chunk.objects.filter(document_id=document_id).update(embedding=None)
            document = _hold(document_id, token, embedding_fingerprint=kb.embedding_fingerprint)
        done = Chunk.objects.filter(document_id=document_id, embedding__isnull=False).count()
        document = _hold(
            document_id, token, progress_done=done, progress_total=document.chunk_count
        )
        _publish(document)
    if kb.embedding_dimensions:
        store.ensure_index(kb)
    client = embeddings_for_kb(kb)
    size = max(1, _config()["EMBED_BATCH"])
    pending = list(
        Chunk.objects.filter(document_id=document_id, embedding__isnull=True)
        .order_by("index")
        .values_list("pk", "text")
    )
    batches = [pending[i : i + size] for i in range(0, len(pending), size)]
    if not batches:
        return
    # The next batch is being embedded while this one is written: the endpoint, not the
    # database, sets the pace. At most one request is ahead of what is stored.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed") as ahead:
        future = ahead.submit(embed_documents, client, [text for _, text in batches[0]])
        for number, batch in enumerate(batches):
            vectors = future.result()
            if number + 1 < len(batches):
                texts = [text for _, text in batches[number + 1]]
                future = ahead.submit(embed_documents, client, texts)
            _store_batch(document_id, token, store, batch, vectors)


def _store_batch(
    document_id: int,
    token: str,
    store: VectorStore,
    pending: list[tuple[int, str]],
    vectors: list[list[float]],
) -> None:
    dims = len(vectors[0])
    with transaction.atomic():
        document = _hold(document_id, token)
        kb = KnowledgeBase.objects.get(pk=document.knowledge_base_id)
        if kb.embedding_fingerprint != document.embedding_fingerprint:
            raise LeaseLost(document_id)  # settings changed meanwhile: a re-index follows
        if kb.embedding_dimensions is None:
            # The first vectors of this knowledge base: its dimensions and its index.
            kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
            if kb.embedding_dimensions is None:
                kb.embedding_dimensions = dims
                kb.save(update_fields=["embedding_dimensions", "updated_at"])
                store.ensure_index(kb)
        if kb.embedding_dimensions != dims:
            raise EmbeddingError(
                "embedding_dimensions",
                f"The embeddings model answered with {dims} dimensions; this knowledge base "
                f"holds vectors of {kb.embedding_dimensions}. Change its embedding settings "
                "to re-index it with the new model.",
            )
        store.add(kb, [(pk, vector) for (pk, _), vector in zip(pending, vectors, strict=True)])
        # Under the lease nobody else writes these rows: the batch's chunks are now done.
        document.progress_done += len(pending)
        document.save(update_fields=["progress_done", "updated_at"])
        _publish(document)


def requeue_stale(dispatch: Callable[[int], None] | None = None) -> list[int]:
    """Documents whose worker is gone (lease ran out mid-ingestion) or whose task never
    arrived (queued long ago, no lease): queue them again. Returns their ids."""
    if dispatch is None:
        # Here: knowledge.tasks imports this module (its task calls ingest()).
        from knowledge.tasks import dispatch_ingestion

        dispatch = dispatch_ingestion
    send: Callable[[int], None] = dispatch
    now = timezone.now()
    with transaction.atomic():
        stale = list(
            KnowledgeDocument.objects.select_for_update(skip_locked=True)
            .filter(
                status__in=[
                    DocumentStatus.QUEUED,
                    DocumentStatus.PARSING,
                    DocumentStatus.EMBEDDING,
                ],
                lease_expires_at__lt=now,
            )
            .values_list("pk", flat=True)[:200]
        )
        lost = list(
            KnowledgeDocument.objects.select_for_update(skip_locked=True)
            .filter(
                status=DocumentStatus.QUEUED,
                lease_expires_at__isnull=True,
                updated_at__lt=now - REDISPATCH_AFTER,
            )
            .values_list("pk", flat=True)[:200]
        )
        if stale:
            KnowledgeDocument.objects.filter(pk__in=stale).update(
                status=DocumentStatus.QUEUED, lease_token="", lease_expires_at=None
            )
        if lost:  # touched, so each is sent again once a minute at most
            KnowledgeDocument.objects.filter(pk__in=lost).update(updated_at=now)
        for document_id in [*stale, *lost]:
            transaction.on_commit(partial(send, document_id))
    return [*stale, *lost]
