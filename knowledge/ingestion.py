"""Ingestion of one document: parse -> split -> embed -> index, as a pipeline.

Pages are parsed and split as they come; each batch of chunks goes to the embeddings
endpoint as soon as it is full, with up to `EMBED_CONCURRENCY` requests in flight, and is
stored with its vectors when the answer is back. Parsing, the endpoint and the database
work at the same time, so the endpoint sets the pace.

Idempotent and restartable. The worker holds a lease on the document row, renewed at every
write; every write checks the lease in the same transaction, so a worker that lost it (its
lease ran out and the reaper handed the document to another) writes nothing more. What a
killed worker had stored is kept: a chunk row is written with its vector (without an
embeddings model, in batches), unique per document and index; a restart under the same
chunking settings parses the file again and keeps every stored chunk whose text is the
same, and chunks that have their embedding are not sent to the endpoint again (only the
batches in flight when the worker died are). Only when everything is there do the
document's chunks become searchable, all at once, in one transaction that also puts their
vectors into the knowledge base's index (knowledge.vectorstore).

Failures end the document `failed` with a code and a sentence (parse errors from
knowledge.parsing, endpoint errors from knowledge.embeddings); its chunks stay unsearchable,
and `document_retry` resumes from what was kept.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q
from django.utils import timezone

from knowledge import progress
from knowledge.embeddings import EmbeddingError, embed_documents, embeddings_for_kb
from knowledge.models import Chunk, DocumentStatus, KnowledgeBase, KnowledgeDocument
from knowledge.parsing import FORMATS, ParseError, parse_stream
from knowledge.splitting import ChunkDraft, iter_chunks
from knowledge.vectorstore import VectorStore, get_store

log = logging.getLogger(__name__)

INTERNAL_ERROR = (
    "Ingestion failed unexpectedly. Retry it; if it fails again, tell an administrator."
)
# Queued documents whose task was not picked up this long are sent again (a broker that
# restarted empty); duplicates are harmless (the lease).
REDISPATCH_AFTER = timedelta(seconds=60)
# Without an embeddings model, new chunks are written in batches of this many.
KEYWORD_BATCH = 500
# A new knowledge base's index is built over its first document's vectors when they become
# searchable, unless there are more than this many: the build locks the chunk table against
# writes (a second or two for this many at common models' dimensions), so a longer first
# document gets an empty index first, in a short transaction, and its vectors go in one by
# one (under its own locks only).
INDEX_BUILD_MAX = 10_000
# Progress reaches the page at most this often while batches are stored (each message is a
# read of the row and a publish); every change of status is sent at once.
PROGRESS_EVERY = 0.25
# While no chunk is ready, the ingesting thread looks for answered batches this often.
IDLE_POLL = 0.01


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


def _locked(document_id: int, token: str) -> KnowledgeDocument:
    """Inside a transaction: lock the document and check the lease is still ours. Its
    knowledge base is read and locked with it (its settings cannot change under the
    transaction)."""
    document = (
        KnowledgeDocument.objects.select_for_update()
        .select_related("knowledge_base")
        .filter(pk=document_id)
        .first()
    )
    if document is None or document.lease_token != token:
        raise LeaseLost(document_id)
    return document


def _renew(document: KnowledgeDocument, **changes: Any) -> KnowledgeDocument:
    """Renew the lease of a `_locked` document and apply `changes`, in one UPDATE."""
    document.lease_expires_at = _lease_until()
    for name, value in changes.items():
        setattr(document, name, value)
    document.save(update_fields=["lease_expires_at", "updated_at", *changes])
    return document


def _hold(document_id: int, token: str, **changes: Any) -> KnowledgeDocument:
    """Inside a transaction: lock the document, check the lease is still ours, renew it and
    apply `changes`."""
    return _renew(_locked(document_id, token), **changes)


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
    client = embeddings_for_kb(kb)  # None without an embeddings model (keyword only)
    if kb.embedding_dimensions:
        store.ensure_index(kb)  # an index of an older definition is replaced
    pipeline = _Pipeline(document_id, token, store, client)
    try:
        if (
            document.chunking_fingerprint == kb.chunking_fingerprint
            and document.chunk_count > 0
            and Chunk.objects.filter(document_id=document_id).count() == document.chunk_count
        ):
            _embed_stored(document_id, token, pipeline)
        else:
            _chunk(document, token, kb, pipeline)
        pipeline.finish()
    finally:
        pipeline.close()
    if Chunk.objects.filter(document_id=document_id).count() > INDEX_BUILD_MAX:
        with transaction.atomic():
            kb = _hold(document_id, token).knowledge_base
            store.index_now(kb)
    with transaction.atomic():
        document = _hold(document_id, token)
        kb = KnowledgeBase.objects.select_for_update().get(pk=document.knowledge_base_id)
        if (document.chunking_fingerprint, document.embedding_fingerprint) != (
            kb.chunking_fingerprint,
            kb.embedding_fingerprint,
        ):
            raise LeaseLost(document_id)  # settings changed meanwhile: a re-index follows
        store.make_searchable(kb, document_id)
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


class _Stored(NamedTuple):
    pk: int
    content_hash: str
    embedded: bool


def _chunk(document: KnowledgeDocument, token: str, kb: KnowledgeBase, pipeline: _Pipeline) -> None:
    """Parse and split the file as a stream, handing each chunk that is not stored yet (or
    lacks its vector) to the pipeline as soon as it is made."""
    embedding = pipeline.client is not None
    with transaction.atomic():
        document = _hold(document.pk, token, status=DocumentStatus.PARSING)
        if document.chunking_fingerprint != kb.chunking_fingerprint:
            # Made with other settings (or never): none of them is kept.
            Chunk.objects.filter(document_id=document.pk).delete()
            document = _hold(
                document.pk,
                token,
                chunking_fingerprint=kb.chunking_fingerprint,
                embedding_fingerprint=kb.embedding_fingerprint,
                chunk_count=0,
            )
        elif document.embedding_fingerprint != kb.embedding_fingerprint:
            # Embedded with other settings (or never): every stored chunk needs a new vector.
            Chunk.objects.filter(document_id=document.pk).update(embedding=None)
            document = _hold(document.pk, token, embedding_fingerprint=kb.embedding_fingerprint)
        stored = {
            index: _Stored(pk, digest, has_vector)
            for index, pk, digest, has_vector in Chunk.objects.filter(document_id=document.pk)
            .annotate(
                has_vector=ExpressionWrapper(
                    Q(embedding__isnull=False), output_field=BooleanField()
                )
            )
            .values_list("index", "pk", "content_hash", "has_vector")
        }
        done = sum(1 for row in stored.values() if row.embedded) if embedding else 0
        document = _hold(document.pk, token, progress_done=done, progress_total=0)
        _publish(document)
    stream = parse_stream(
        _parse_name(document),
        _read(document),
        child_from_pages=_config()["PDF_CHILD_PAGES"],
        children=_config()["PDF_CHILDREN"],
    )
    cap = _config()["MAX_CHUNKS_PER_DOCUMENT"]
    total = 0
    drafts = _Drafts(
        stream.sections,
        iter_chunks(stream.sections, chunk_size=kb.chunk_size, chunk_overlap=kb.chunk_overlap),
    )
    for draft in drafts.until_done(idle=pipeline.pump):
        total += 1
        if total > cap:
            raise ParseError(
                "too_large",
                f"The document makes more than {cap:,} chunks, the most allowed "
                "(raise the chunk size or split the file).",
            )
        known = stored.pop(draft.index, None)
        if known is not None and known.content_hash != draft.content_hash:
            # Stored by a run whose parser read the file differently: made again.
            _delete_chunks(document.pk, token, [known.pk], pipeline.store, kb.pk)
            known = None
        if known is None:
            pipeline.put(_Item(draft.text, draft=draft))
        elif embedding and not known.embedded:
            pipeline.put(_Item(draft.text, pk=known.pk))
        else:
            pipeline.pump()
    if total == 0:
        raise ParseError("no_text", "The document has no text that could be extracted.")
    with transaction.atomic():
        document = _hold(
            document.pk,
            token,
            status=DocumentStatus.EMBEDDING if embedding else DocumentStatus.PARSING,
            pages=stream.pages,
            chunk_count=total,
            progress_total=total,
        )
        if stored:  # beyond the end: made from a longer reading of the file
            Chunk.objects.filter(pk__in=[row.pk for row in stored.values()]).delete()
        _publish(document)


class _Failed(NamedTuple):
    error: BaseException


class _Drafts:
    """Parsing and splitting in a thread of their own (they never touch the database), so
    that the ingesting thread stores the batches the endpoint has answered while it waits
    for the next chunk. The chunks wait in a queue, bounded by the file's text."""

    def __init__(
        self, sections: Generator[Any, None, None], drafts: Generator[ChunkDraft, None, None]
    ) -> None:
        self.sections, self.drafts = sections, drafts
        self.queue: SimpleQueue[ChunkDraft | _Failed | None] = SimpleQueue()
        self.stopped = threading.Event()
        threading.Thread(target=self._run, name="parse", daemon=True).start()

    def _run(self) -> None:
        try:
            for draft in self.drafts:
                if self.stopped.is_set():
                    break
                self.queue.put(draft)
            self.queue.put(None)
        except BaseException as error:  # noqa: BLE001 (handed to the ingesting thread)
            self.queue.put(_Failed(error))
        finally:
            # A PDF's child processes are stopped when its sections are closed.
            self.drafts.close()
            self.sections.close()

    def until_done(self, *, idle: Callable[[], None]) -> Iterator[ChunkDraft]:
        """The chunks in order; `idle` is called while none is ready. A parsing error is
        raised here, as it would have been by parsing in this thread."""
        try:
            while True:
                try:
                    item = self.queue.get(timeout=IDLE_POLL)
                except Empty:
                    idle()
                    continue
                if item is None:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self.stopped.set()


def _delete_chunks(
    document_id: int, token: str, pks: list[int], store: VectorStore, kb_id: int
) -> None:
    with transaction.atomic():
        _hold(document_id, token)
        Chunk.objects.filter(document_id=document_id, pk__in=pks).delete()
    store.delete_document(kb_id, pks)


def _embed_stored(document_id: int, token: str, pipeline: _Pipeline) -> None:
    """Every chunk is stored already: embed those without a vector."""
    if pipeline.client is None:
        return
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
    pending = (
        Chunk.objects.filter(document_id=document_id, embedding__isnull=True)
        .order_by("index")
        .values_list("pk", "text")
    )
    for pk, text in pending.iterator(chunk_size=2000):
        pipeline.put(_Item(text, pk=pk))


@dataclass(frozen=True)
class _Item:
    """A chunk on its way to the database: a new one (its draft) or a stored one that
    lacks its vector (its row id)."""

    text: str
    draft: ChunkDraft | None = None
    pk: int | None = None


class _Pipeline:
    """Batches of chunks to the embeddings endpoint, up to `EMBED_CONCURRENCY` requests at
    once, and into the database in the order they were made, each batch in a transaction
    that checks the lease. At most twice that many batches are sent and not stored yet, so
    the vectors held in memory stay bounded however far parsing runs ahead. Without an
    embeddings client, batches are stored as they fill."""

    def __init__(
        self, document_id: int, token: str, store: VectorStore, client: Any | None
    ) -> None:
        self.document_id, self.token, self.store, self.client = (
            document_id,
            token,
            store,
            client,
        )
        config = _config()
        concurrency = max(1, config["EMBED_CONCURRENCY"])
        self.size = max(1, config["EMBED_BATCH"]) if client is not None else KEYWORD_BATCH
        self.window = 2 * concurrency
        self.executor = (
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="embed")
            if client is not None
            else None
        )
        self.buffer: list[_Item] = []
        self.waiting: deque[list[_Item]] = deque()
        self.sent: deque[tuple[list[_Item], Future[list[list[float]]] | None]] = deque()
        self.published_at = 0.0

    def put(self, item: _Item) -> None:
        self.buffer.append(item)
        if len(self.buffer) >= self.size:
            self.waiting.append(self.buffer)
            self.buffer = []
        self.pump()

    def pump(self, *, block: bool = False) -> None:
        """Send what waits while the window allows, and store the batches that are back,
        in order; with `block`, until nothing is left."""
        while True:
            while self.waiting and len(self.sent) < self.window:
                items = self.waiting.popleft()
                future = (
                    self.executor.submit(embed_documents, self.client, [i.text for i in items])
                    if self.executor is not None
                    else None
                )
                self.sent.append((items, future))
            if not self.sent:
                return
            items, future = self.sent[0]
            if future is not None and not future.done() and not block:
                return
            self.sent.popleft()
            self._store(items, future.result() if future is not None else None)

    def finish(self) -> None:
        """Send the last, partial batch and store everything."""
        if self.buffer:
            self.waiting.append(self.buffer)
            self.buffer = []
        self.pump(block=True)

    def close(self) -> None:
        """Stop: what was not sent is dropped; requests under way are waited for."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def _store(self, items: list[_Item], vectors: list[list[float]] | None) -> None:
        document_id, token = self.document_id, self.token
        with transaction.atomic():
            document = _locked(document_id, token)
            kb = document.knowledge_base
            if vectors is not None:
                kb = self._checked_kb(document, kb, len(vectors[0]))
            new = [(i, item.draft) for i, item in enumerate(items) if item.draft is not None]
            rows = Chunk.objects.bulk_create(
                [
                    Chunk(
                        workspace_id=document.workspace_id,
                        knowledge_base_id=document.knowledge_base_id,
                        document_id=document_id,
                        index=draft.index,
                        text=draft.text,
                        page=draft.page,
                        heading=(draft.heading or "")[:500],
                        content_hash=draft.content_hash,
                        embedding=vectors[i] if vectors is not None else None,
                    )
                    for i, draft in new
                ]
            )
            if vectors is None:
                _renew(document)
                return
            self.store.add(
                kb,
                [(row.pk, vectors[i]) for row, (i, _) in zip(rows, new, strict=True)],
                in_rows=True,
            )
            self.store.add(
                kb, [(item.pk, vectors[i]) for i, item in enumerate(items) if item.pk is not None]
            )
            # Under the lease nobody else writes these rows: the batch's chunks are now done.
            _renew(document, progress_done=document.progress_done + len(items))
            now = time.monotonic()
            if now - self.published_at >= PROGRESS_EVERY:
                self.published_at = now
                _publish(document)

    def _checked_kb(
        self, document: KnowledgeDocument, kb: KnowledgeBase, dims: int
    ) -> KnowledgeBase:
        if kb.embedding_fingerprint != document.embedding_fingerprint:
            raise LeaseLost(document.pk)  # settings changed meanwhile: a re-index follows
        if kb.embedding_dimensions is None:
            # The first vectors of this knowledge base: its dimensions. Its index is built
            # when its first document becomes searchable.
            kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
            if kb.embedding_dimensions is None:
                kb.embedding_dimensions = dims
                kb.save(update_fields=["embedding_dimensions", "updated_at"])
        if kb.embedding_dimensions != dims:
            raise EmbeddingError(
                "embedding_dimensions",
                f"The embeddings model answered with {dims} dimensions; this knowledge base "
                f"holds vectors of {kb.embedding_dimensions}. Change its embedding settings "
                "to re-index it with the new model.",
            )
        return kb


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
