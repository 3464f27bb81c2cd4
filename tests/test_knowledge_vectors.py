"""Vector retrieval through the fake embeddings endpoint (the real LangChain clients): on
PostgreSQL with pgvector (its partial HNSW index used by the query) and with sqlite-vec;
an endpoint failing halfway; hybrid fusion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from accounts.models import User, Workspace
from flows.services import credential_create
from knowledge import ingestion, retrieval
from knowledge.models import Chunk, DocumentStatus, KnowledgeBase, KnowledgeDocument
from knowledge.vectorstore import (
    PgVectorStore,
    SqliteVecStore,
    hnsw_index_name,
    searchable_chunks,
)
from tests.conftest import require_services
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.knowledge_helpers import FAQ_ZH, api, ingest_queued, make_kb, membership, search, upload


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    # Ingestion runs here, eagerly: a live worker of the session (other tests start one)
    # must not take these documents (it would not even see this media directory).
    monkeypatch.setattr("knowledge.tasks.dispatch_ingestion", lambda document_id: None)


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def embedding_kb(
    workspace: Workspace, owner: User, fake: FakeOpenAIServer, *, provider: str = "openai"
) -> KnowledgeBase:
    credential = credential_create(
        workspace=workspace,
        acting=membership(workspace, owner),
        name=f"embeddings-{provider}",
        provider=provider,
        base_url=fake.base_url if provider == "openai" else fake.root_url,
        api_key="sk-test",
    )
    return make_kb(
        workspace,
        owner,
        name=f"FAQ {provider}",
        chunk_size=200,
        chunk_overlap=20,
        embedding_credential_id=credential.pk,
        embedding_model="fake-embed",
    )


def upload_faq(client: Any, kb: KnowledgeBase) -> None:
    files = {name: text.encode() for name, text in FAQ_ZH.items()}
    assert upload(client, "acme", kb.pk, files).status_code == 201


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_vector_retrieval_on_pgvector_uses_the_knowledge_bases_hnsw_index(
    provider, workspace_a, alice_owner, client_for, fake
):
    require_services(postgres=True, redis=False)
    kb = embedding_kb(workspace_a, alice_owner, fake, provider=provider)
    owner = client_for(alice_owner)
    upload_faq(owner, kb)
    assert set(ingest_queued(kb)) == {"indexed"}
    kb.refresh_from_db()
    assert kb.embedding_dimensions == fake.embedding_dimensions
    assert Chunk.objects.filter(knowledge_base=kb, embedding__isnull=True).count() == 0

    body = search(owner, "acme", kb.pk, "订单", mode="vector", k=3).json()
    assert body["used"] == "vector"
    assert body["hits"][0]["document"] == "订单状态.txt"
    assert 0 < body["hits"][0]["score"] <= 1
    hybrid = search(owner, "acme", kb.pk, "订单", mode="hybrid", k=3).json()
    assert hybrid["used"] == "hybrid" and hybrid["notes"] == []
    assert hybrid["hits"][0]["document"] == "订单状态.txt"


@pytest.mark.django_db(transaction=True)  # an index is planned on once its transaction ended
def test_the_vector_query_is_planned_on_the_knowledge_bases_partial_hnsw_index(
    workspace_a, alice_owner, client_for, fake
):
    require_services(postgres=True, redis=False)
    kb = embedding_kb(workspace_a, alice_owner, fake)
    upload_faq(client_for(alice_owner), kb)
    assert set(ingest_queued(kb)) == {"indexed"}
    kb.refresh_from_db()
    # The partial expression index exists and the ORM query is planned on it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", [hnsw_index_name(kb.pk)]
        )
        (definition,) = cursor.fetchone()
        assert "hnsw" in definition and f"vector({fake.embedding_dimensions})" in definition
        assert f"(knowledge_base_id = {kb.pk}) AND searchable" in definition
    from django.db.models.functions import Cast
    from pgvector.django import CosineDistance, VectorField

    # The store's query: the knowledge base's searchable chunks (the index's predicate).
    query = (
        searchable_chunks(kb)
        .annotate(
            d=CosineDistance(
                Cast("embedding", output_field=VectorField(dimensions=kb.embedding_dimensions)),
                [0.1] * kb.embedding_dimensions,
            )
        )
        .order_by("d")[:3]
    )
    with connection.cursor() as cursor:
        # A tiny table: the planner would sort a few rows itself; without sorts and scans
        # of the whole table, only the HNSW index can give the order.
        cursor.execute("SET enable_seqscan = off; SET enable_sort = off")
        try:
            plan = query.explain()
        finally:
            cursor.execute("RESET enable_seqscan; RESET enable_sort")
    assert hnsw_index_name(kb.pk) in plan


def test_vector_retrieval_with_sqlite_vec(workspace_a, alice_owner, client_for, fake, tmp_path):
    store = SqliteVecStore(tmp_path / "vectors.sqlite3")
    kb = embedding_kb(workspace_a, alice_owner, fake)
    owner = client_for(alice_owner)
    upload_faq(owner, kb)
    assert set(ingest_queued(kb, store=store)) == {"indexed"}
    kb.refresh_from_db()
    result = retrieval.search(kb, "订单", mode="vector", k=3, store=store)
    assert result.hits[0].document == "订单状态.txt"
    assert [h.chunk_id for h in result.hits] == [
        pk for pk, _ in store.search(kb, _query_vector(kb, "订单"), 3)
    ]
    hybrid = retrieval.search(kb, "订单", mode="hybrid", k=3, store=store)
    assert hybrid.hits[0].document == "订单状态.txt"
    # A threshold above every similarity returns nothing; the filter keeps to one format.
    assert (
        retrieval.search(kb, "订单", mode="vector", k=3, threshold=0.9999, store=store).hits == []
    )
    # A deleted document's vectors are forgotten, and its chunks never come back.
    document = KnowledgeDocument.objects.get(knowledge_base=kb, name="订单状态.txt")
    chunk_ids = list(document.chunks.values_list("pk", flat=True))
    document.chunks.all().delete()
    store.delete_document(kb.pk, chunk_ids)
    after = retrieval.search(kb, "订单", mode="vector", k=5, store=store)
    assert "订单状态.txt" not in [h.document for h in after.hits]


def _query_vector(kb: KnowledgeBase, text: str) -> list[float]:
    from knowledge.embeddings import embed_query, embeddings_for_kb

    return embed_query(embeddings_for_kb(kb), text)


def test_metadata_filter_keeps_to_the_named_documents(workspace_a, alice_owner, client_for, fake):
    kb = embedding_kb(workspace_a, alice_owner, fake)
    owner = client_for(alice_owner)
    upload_faq(owner, kb)
    ingest_queued(kb)
    for mode in ("keyword", "vector", "hybrid"):
        body = search(
            owner, "acme", kb.pk, "订单 退款", mode=mode, filter={"documents": ["退款政策.txt"]}
        ).json()
        assert {h["document"] for h in body["hits"]} == {"退款政策.txt"}, mode
    body = search(owner, "acme", kb.pk, "订单", mode="keyword", filter={"formats": ["pdf"]}).json()
    assert body["hits"] == []
    refused = search(owner, "acme", kb.pk, "订单", filter={"sql": "1=1"})
    assert refused.status_code == 422  # unknown filter keys are refused, not ignored


def test_embedding_endpoint_failing_halfway_fails_the_document_and_retry_resumes(
    workspace_a, alice_owner, client_for, fake, settings
):
    # One request at a time: which requests the endpoint answers is then the order sent.
    settings.FLOWDECK_KNOWLEDGE = {
        **settings.FLOWDECK_KNOWLEDGE,
        "EMBED_BATCH": 2,
        "EMBED_CONCURRENCY": 1,
    }
    kb = embedding_kb(workspace_a, alice_owner, fake)
    owner = client_for(alice_owner)
    text = "\n\n".join(f"Paragraph {i}: refunds are paid back within {i} days." for i in range(40))
    assert upload(owner, "acme", kb.pk, {"refunds.txt": text.encode()}).status_code == 201
    fake.embed_fail_after = 2  # two batches succeed, then every request fails
    assert ingest_queued(kb) == ["failed"]
    document = KnowledgeDocument.objects.get()
    assert document.status == DocumentStatus.FAILED
    assert document.error_code == "embedding_failed"
    assert "embeddings endpoint failed" in document.error_message
    # What the two batches embedded is kept (stored with their vectors), nothing else.
    assert document.progress_done == 4
    assert Chunk.objects.filter(document=document, embedding__isnull=False).count() == 4
    assert Chunk.objects.filter(document=document).count() == 4
    assert not Chunk.objects.filter(searchable=True).exists()
    assert search(owner, "acme", kb.pk, "refunds", mode="keyword").json()["hits"] == []

    fake.embed_fail_after = None
    embedded_before = fake.embedded_inputs
    response = owner.post(api("acme", f"knowledge-bases/{kb.pk}/documents/{document.pk}/retry"))
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert ingest_queued(kb) == ["indexed"]
    document.refresh_from_db()
    # Resumed: only the chunks without an embedding were sent again, no chunk duplicated.
    assert fake.embedded_inputs - embedded_before == document.chunk_count - 4
    assert Chunk.objects.filter(document=document).count() == document.chunk_count
    assert search(owner, "acme", kb.pk, "refunds", mode="vector").json()["hits"]


def test_changing_the_embedding_model_reembeds_and_keeps_chunks(
    workspace_a, alice_owner, client_for, fake
):
    kb = embedding_kb(workspace_a, alice_owner, fake)
    owner = client_for(alice_owner)
    upload_faq(owner, kb)
    ingest_queued(kb)
    chunk_ids = set(Chunk.objects.values_list("pk", flat=True))
    embedded = fake.embedded_inputs
    response = owner.put(
        api("acme", f"knowledge-bases/{kb.pk}"),
        {"embedding_model": "fake-embed-2"},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["embedding_dimensions"] is None
    assert set(KnowledgeDocument.objects.values_list("status", flat=True)) == {"queued"}
    assert set(ingest_queued(kb)) == {"indexed"}
    assert set(Chunk.objects.values_list("pk", flat=True)) == chunk_ids  # chunks kept
    assert fake.embedded_inputs - embedded == len(chunk_ids)  # every chunk embedded anew
    assert search(owner, "acme", kb.pk, "订单", mode="vector").json()["hits"]


def test_another_workspaces_vectors_are_never_returned(
    workspace_a, alice_owner, workspace_b, mallory_owner, client_for, fake
):
    ours = embedding_kb(workspace_a, alice_owner, fake)
    upload_faq(client_for(alice_owner), ours)
    ingest_queued(ours)
    theirs = embedding_kb(workspace_b, mallory_owner, fake)
    for store in (PgVectorStore(),) if connection.vendor == "postgresql" else ():
        theirs.embedding_dimensions = ours.embedding_dimensions or fake.embedding_dimensions
        assert store.search(theirs, _query_vector(ours, "订单"), 10) == []
    ours.refresh_from_db()
    hits = retrieval.search(theirs, "订单", mode="hybrid").hits
    assert hits == []
    assert ingestion.ingest(0) == "skipped"  # an unknown id is nobody's
