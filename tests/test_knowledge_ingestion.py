"""The ingestion pipeline on PostgreSQL: parsing streamed into batches, several embedding
requests in flight, chunks stored with their vectors, a restart after a kill mid-document,
and the per-knowledge-base HNSW index over searchable chunks only (built by the first
document, inserted into by later ones, an index of the older definition replaced)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Count
from django.db.models.functions import Cast
from django.utils import timezone
from pgvector.django import CosineDistance, VectorField

from flows.services import credential_create
from knowledge import ingestion, retrieval, services
from knowledge.models import Chunk, DocumentStatus, KnowledgeBase, KnowledgeDocument
from knowledge.vectorstore import (
    PgVectorStore,
    hnsw_index_name,
    legacy_hnsw_index_name,
    searchable_chunks,
)
from tests.conftest import require_services
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.knowledge_files import make_pdf
from tests.knowledge_helpers import make_kb, membership

# An index is planned on once the transaction that built it has ended.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_services(postgres=True, redis=False)
    settings.MEDIA_ROOT = tmp_path / "media"
    # Ingestion runs here, eagerly: a live worker of the session must not take these.
    monkeypatch.setattr("knowledge.tasks.dispatch_ingestion", lambda document_id: None)
    settings.FLOWDECK_KNOWLEDGE = {
        **settings.FLOWDECK_KNOWLEDGE,
        "EMBED_BATCH": 2,
        "EMBED_CONCURRENCY": 3,
    }


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def vector_kb(workspace: Any, owner: Any, fake: FakeOpenAIServer) -> KnowledgeBase:
    credential = credential_create(
        workspace=workspace,
        acting=membership(workspace, owner),
        name="embeddings",
        provider="openai",
        base_url=fake.base_url,
        api_key="sk-test",
    )
    return make_kb(
        workspace,
        owner,
        name="manuals",
        chunk_size=120,
        chunk_overlap=0,
        embedding_credential_id=credential.pk,
        embedding_model="fake-embed",
    )


def manual_pdf(pages: int, topic: str) -> bytes:
    return make_pdf(
        [
            f"Page {p} of the {topic} manual.\n" + f"The {topic} rule number {p} applies. " * 6
            for p in range(1, pages + 1)
        ]
    )


def add_document(workspace: Any, owner: Any, kb: KnowledgeBase, name: str, data: bytes) -> int:
    upload = services.document_upload(
        workspace=workspace,
        acting=membership(workspace, owner),
        kb=kb,
        name=name,
        data=ContentFile(data, name=name),
        dispatch=False,
    )
    return upload.document.pk


def index_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        return cursor.fetchone()[0] is not None


def planned_index(kb: KnowledgeBase) -> str:
    """The plan of the vector store's query for `kb` (sorts and scans of the whole table
    turned off: on a tiny table only the HNSW index can then give the order)."""
    dims = int(kb.embedding_dimensions or 0)
    query = (
        searchable_chunks(kb)
        .annotate(
            d=CosineDistance(
                Cast("embedding", output_field=VectorField(dimensions=dims)), [0.1] * dims
            )
        )
        .order_by("d")[:3]
    )
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off; SET enable_sort = off")
        try:
            return query.explain()
        finally:
            cursor.execute("RESET enable_seqscan; RESET enable_sort")


def chunks_found_through_the_index(kb: KnowledgeBase) -> set[int]:
    """The chunks a vector search finds when only the HNSW index can answer it (an index
    scan returns only what is in the graph)."""
    kb.refresh_from_db()
    vector = [0.1] * int(kb.embedding_dimensions or 0)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        return {pk for pk, _ in PgVectorStore().search(kb, vector, 100)}


def documents_found_through_the_index(kb: KnowledgeBase) -> set[str]:
    found = chunks_found_through_the_index(kb)
    return set(Chunk.objects.filter(pk__in=found).values_list("document__name", flat=True))


class Killed(BaseException):
    """A worker dying mid-document: not an error ingestion catches (its lease stays)."""


def test_a_restart_after_a_kill_mid_document_makes_every_chunk_searchable_once(
    workspace_a, alice_owner, fake, monkeypatch
):
    kb = vector_kb(workspace_a, alice_owner, fake)
    document_id = add_document(workspace_a, alice_owner, kb, "manual.pdf", manual_pdf(12, "refund"))
    stored_batches = 0
    store = ingestion._Pipeline._store

    def store_then_die(self: Any, items: Any, vectors: Any) -> None:
        nonlocal stored_batches
        if stored_batches == 3:
            raise Killed
        store(self, items, vectors)
        stored_batches += 1

    monkeypatch.setattr(ingestion._Pipeline, "_store", store_then_die)
    with pytest.raises(Killed):
        ingestion.ingest(document_id)
    monkeypatch.setattr(ingestion._Pipeline, "_store", store)
    kept = dict(Chunk.objects.filter(document_id=document_id).values_list("index", "pk"))
    assert len(kept) == 3 * 2  # three batches of two were stored, with their vectors
    assert not Chunk.objects.filter(document_id=document_id, embedding__isnull=True).exists()
    # Nothing answers yet, and a new knowledge base has no index until a document is done.
    assert not searchable_chunks(kb).exists()
    assert retrieval.search(kb, "refund rule", mode="hybrid", k=5).hits == []
    assert not index_exists(hnsw_index_name(kb.pk))
    embedded_before_restart = fake.embedded_inputs

    # The lease runs out; the reaper queues the document again and it is ingested anew.
    KnowledgeDocument.objects.filter(pk=document_id).update(lease_expires_at=timezone.now())
    assert ingestion.requeue_stale(dispatch=lambda document_id: None) == [document_id]
    assert ingestion.ingest(document_id) == "indexed"

    document = KnowledgeDocument.objects.get(pk=document_id)
    chunks = Chunk.objects.filter(document_id=document_id)
    assert document.status == DocumentStatus.INDEXED and document.pages == 12
    assert chunks.count() == document.chunk_count > len(kept)
    assert not chunks.values("index").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert chunks.filter(searchable=True, embedding__isnull=False).count() == chunks.count()
    # What was stored before the kill was kept, rows and vectors, and not sent again.
    assert all(chunks.get(index=index).pk == pk for index, pk in kept.items())
    assert fake.embedded_inputs - embedded_before_restart == document.chunk_count - len(kept)
    kb.refresh_from_db()
    assert hnsw_index_name(kb.pk) in planned_index(kb)
    hits = retrieval.search(kb, "refund rule number 7", mode="vector", k=3).hits
    assert hits and {hit.document for hit in hits} == {"manual.pdf"}


def test_embedding_requests_overlap_up_to_the_configured_number(
    workspace_a, alice_owner, fake, monkeypatch
):
    fake.embed_delay = 0.05
    kb = vector_kb(workspace_a, alice_owner, fake)
    document_id = add_document(workspace_a, alice_owner, kb, "manual.pdf", manual_pdf(8, "refund"))
    lock = threading.Lock()
    running, most = 0, 0
    embed = ingestion.embed_documents

    def counted(client: Any, texts: Any) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return embed(client, texts)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(ingestion, "embed_documents", counted)
    assert ingestion.ingest(document_id) == "indexed"
    document = KnowledgeDocument.objects.get(pk=document_id)
    assert fake.embedding_requests == -(-document.chunk_count // 2)  # batches of two
    assert most == 3  # EMBED_CONCURRENCY, never more
    stored = list(Chunk.objects.filter(document_id=document_id).order_by("index"))
    assert [chunk.index for chunk in stored] == list(range(document.chunk_count))
    assert [chunk.page for chunk in stored] == sorted(chunk.page for chunk in stored)


def kb_with_a_document(
    workspace: Any, owner: Any, fake: FakeOpenAIServer
) -> tuple[KnowledgeBase, int]:
    """A new knowledge base and its first document, indexed."""
    kb = vector_kb(workspace, owner, fake)
    first = add_document(workspace, owner, kb, "refunds.pdf", manual_pdf(3, "refund"))
    assert ingestion.ingest(first) == "indexed"
    kb.refresh_from_db()
    return kb, first


def test_the_first_document_builds_the_index_and_later_ones_go_into_it(
    workspace_a, alice_owner, fake
):
    kb, first = kb_with_a_document(workspace_a, alice_owner, fake)
    assert index_exists(hnsw_index_name(kb.pk))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", [hnsw_index_name(kb.pk)]
        )
        (definition,) = cursor.fetchone()
    assert f"WHERE ((knowledge_base_id = {kb.pk}) AND searchable)" in definition

    second = add_document(workspace_a, alice_owner, kb, "shipping.pdf", manual_pdf(3, "shipping"))
    assert ingestion.ingest(second) == "indexed"
    assert hnsw_index_name(kb.pk) in planned_index(kb)
    # Both documents' vectors are in the graph: the first's built, the second's inserted.
    assert documents_found_through_the_index(kb) == {"refunds.pdf", "shipping.pdf"}

    # Re-indexed, both leave retrieval and come back, into the graph again.
    services.kb_reindex(workspace=workspace_a, acting=membership(workspace_a, alice_owner), kb=kb)
    assert documents_found_through_the_index(kb) == set()
    assert ingestion.ingest(first) == "indexed"
    assert documents_found_through_the_index(kb) == {"refunds.pdf"}
    assert ingestion.ingest(second) == "indexed"
    assert documents_found_through_the_index(kb) == {"refunds.pdf", "shipping.pdf"}


def test_an_index_of_the_older_definition_is_replaced_by_the_next_ingestion(
    workspace_a, alice_owner, fake
):
    kb, _ = kb_with_a_document(workspace_a, alice_owner, fake)
    dims = kb.embedding_dimensions
    with connection.cursor() as cursor:  # as an installation before this change has it
        cursor.execute(f"DROP INDEX {hnsw_index_name(kb.pk)}")
        cursor.execute(
            f"CREATE INDEX {legacy_hnsw_index_name(kb.pk)} ON knowledge_chunk USING hnsw "
            f"((embedding::vector({dims})) vector_cosine_ops) WHERE knowledge_base_id = {kb.pk}"
        )
    assert legacy_hnsw_index_name(kb.pk) in planned_index(kb)  # still serves meanwhile

    second = add_document(workspace_a, alice_owner, kb, "shipping.pdf", manual_pdf(3, "shipping"))
    assert ingestion.ingest(second) == "indexed"
    assert not index_exists(legacy_hnsw_index_name(kb.pk))
    assert index_exists(hnsw_index_name(kb.pk))
    assert hnsw_index_name(kb.pk) in planned_index(kb)
    documents = {hit.document for hit in retrieval.search(kb, "rule", mode="vector", k=20).hits}
    assert documents == {"refunds.pdf", "shipping.pdf"}

    # Deleting the knowledge base drops whichever of the two it has.
    PgVectorStore().drop_knowledge_base(kb.pk)
    assert not index_exists(hnsw_index_name(kb.pk))


def test_a_long_first_document_gets_an_empty_index_and_inserts_its_vectors(
    workspace_a, alice_owner, fake, monkeypatch
):
    monkeypatch.setattr(ingestion, "INDEX_BUILD_MAX", 6)
    kb = vector_kb(workspace_a, alice_owner, fake)
    document_id = add_document(workspace_a, alice_owner, kb, "manual.pdf", manual_pdf(6, "refund"))
    built: list[int] = []
    index_now = PgVectorStore.index_now

    def watched(self: Any, kb: KnowledgeBase) -> None:
        # Made before the document is searchable: over no vector at all.
        built.append(Chunk.objects.filter(knowledge_base=kb, searchable=True).count())
        index_now(self, kb)

    monkeypatch.setattr(PgVectorStore, "index_now", watched)
    assert ingestion.ingest(document_id) == "indexed"
    assert built == [0]
    chunks = set(Chunk.objects.filter(document_id=document_id).values_list("pk", flat=True))
    assert len(chunks) > 6 and chunks_found_through_the_index(kb) == chunks
