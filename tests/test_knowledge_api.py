"""Knowledge bases through the API and the services: create, upload each format, ingest,
search (keyword and hybrid, Chinese included), dedupe, delete, re-index, tenancy and every
kind of bad input the issue names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage

from accounts.models import User, Workspace
from audit.models import AuditEntry
from knowledge import services
from knowledge.models import Chunk, DocumentStatus, KnowledgeBase, KnowledgeDocument
from tests.knowledge_files import (
    make_csv,
    make_damaged_pdf,
    make_docx,
    make_encrypted_pdf,
    make_html,
    make_markdown,
    make_pdf,
    make_zip_bomb_docx,
)
from tests.knowledge_helpers import FAQ_ZH, api, ingest_queued, make_kb, membership, search, upload


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    # Ingestion runs here, eagerly: a live worker of the session (other tests start one)
    # must not take these documents (it would not even see this media directory).
    monkeypatch.setattr("knowledge.tasks.dispatch_ingestion", lambda document_id: None)


@pytest.fixture
def kb(workspace_a: Workspace, alice_owner: User) -> KnowledgeBase:
    return make_kb(workspace_a, alice_owner, chunk_size=200, chunk_overlap=20)


@pytest.fixture
def owner(client_for: Any, alice_owner: User) -> Any:
    return client_for(alice_owner)


# --- knowledge bases ---------------------------------------------------------------------------
def test_create_list_rename_delete_knowledge_base(owner, client_for, bob_viewer, workspace_a):
    created = owner.post(
        api("acme", "knowledge-bases"), {"name": "FAQ"}, content_type="application/json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["modes"] == ["keyword", "hybrid"] and body["embedding_credential"] is None
    kb_id = body["id"]
    duplicate = owner.post(
        api("acme", "knowledge-bases"), {"name": "FAQ"}, content_type="application/json"
    )
    assert duplicate.status_code == 400
    assert "exists already" in str(duplicate.json()["detail"])
    listed = client_for(bob_viewer).get(api("acme", "knowledge-bases")).json()
    assert [kb["name"] for kb in listed] == ["FAQ"]
    renamed = owner.put(
        api("acme", f"knowledge-bases/{kb_id}"),
        {"name": "常见问题"},
        content_type="application/json",
    )
    assert renamed.json()["name"] == "常见问题"
    assert renamed.json()["version"] == 1  # a rename changes no content or settings
    assert client_for(bob_viewer).delete(api("acme", f"knowledge-bases/{kb_id}")).status_code == 403
    assert owner.delete(api("acme", f"knowledge-bases/{kb_id}")).status_code == 204
    assert not KnowledgeBase.objects.filter(pk=kb_id).exists()
    actions = list(
        AuditEntry.objects.filter(action__startswith="knowledge_base.").values_list(
            "action", flat=True
        )
    )
    assert sorted(actions) == [
        "knowledge_base.create",
        "knowledge_base.delete",
        "knowledge_base.update",
    ]


def test_embedding_credential_must_be_of_this_workspace(
    owner, workspace_b, mallory_owner, workspace_a
):
    from flows.services import credential_create

    foreign = credential_create(
        workspace=workspace_b,
        acting=membership(workspace_b, mallory_owner),
        name="theirs",
        provider="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
    )
    response = owner.post(
        api("acme", "knowledge-bases"),
        {"name": "x", "embedding_credential": foreign.pk, "embedding_model": "m"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "No such credential" in str(response.json()["detail"])
    assert not KnowledgeBase.objects.exists()


# --- upload and ingest each format ---------------------------------------------------------------
FORMATS = {
    "guide.pdf": make_pdf(["Welcome to the guide.", "Refunds take five days on page two."]),
    "guide.docx": make_docx(
        ["Intro text.", "Refunds take five days."], headings={1: "Refund policy"}
    ),
    "guide.html": make_html("<h1>Refund policy</h1><p>Refunds take five days.</p>"),
    "guide.md": make_markdown("# Refund policy\n\nRefunds take five days.\n"),
    "guide.txt": b"Refunds take five days.",
    "guide.csv": make_csv([["question", "answer"], ["refund time", "Refunds take five days."]]),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_upload_and_ingest_each_format(name, owner, kb):
    response = upload(owner, "acme", kb.pk, {name: FORMATS[name]})
    assert response.status_code == 201, response.content
    (result,) = response.json()["results"]
    assert result["created"] is True and result["document"]["status"] == "queued"
    assert ingest_queued(kb) == ["indexed"]
    document = KnowledgeDocument.objects.get(pk=result["document"]["id"])
    assert document.status == DocumentStatus.INDEXED and document.chunk_count >= 1
    assert document.format == {"md": "markdown", "txt": "text"}.get(
        name.rsplit(".", 1)[1], name.rsplit(".", 1)[1]
    )
    assert default_storage.exists(document.file.name)
    hits = search(owner, "acme", kb.pk, "refunds five days", mode="keyword").json()["hits"]
    assert hits and hits[0]["document"] == name
    if name.endswith(".pdf"):
        assert document.pages == 2 and hits[0]["page"] == 2
    if name.endswith((".docx", ".md", ".html")):
        assert hits[0]["heading"] == "Refund policy"
    status = owner.get(api("acme", f"knowledge-bases/{kb.pk}/documents/{document.pk}")).json()
    assert status["status"] == "indexed"
    assert status["progress"] == {"done": document.chunk_count, "total": document.chunk_count}


def test_several_files_in_one_upload(owner, kb):
    response = upload(owner, "acme", kb.pk, {"a.txt": b"alpha text", "b.md": b"# B\n\nbeta"})
    assert response.status_code == 201
    assert [r["name"] for r in response.json()["results"]] == ["a.txt", "b.md"]
    assert ingest_queued(kb) == ["indexed", "indexed"]


# --- Chinese -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_chinese_query_finds_the_order_status_document(mode, owner, kb):
    assert (
        upload(owner, "acme", kb.pk, {k: v.encode() for k, v in FAQ_ZH.items()}).status_code == 201
    )
    assert set(ingest_queued(kb)) == {"indexed"}
    body = search(owner, "acme", kb.pk, "订单", mode=mode).json()
    assert body["hits"][0]["document"] == "订单状态.txt"
    assert body["used"] == "keyword"
    if mode == "hybrid":  # no embeddings model here: said, not hidden
        assert "keyword" in body["notes"][0]
    assert body["context"].startswith("[1] 订单状态.txt: 我想查询订单状态")


def test_vector_mode_without_embeddings_is_refused_with_a_sentence(owner, kb):
    response = search(owner, "acme", kb.pk, "订单", mode="vector")
    assert response.status_code == 400
    assert response.json()["code"] == "no_embeddings"
    assert "keyword mode" in response.json()["detail"]


# --- dedupe, delete, re-index ----------------------------------------------------------------------
def test_the_same_bytes_uploaded_again_answer_the_existing_document(owner, kb):
    first = upload(owner, "acme", kb.pk, {"faq.txt": b"Refunds take five days."}).json()
    again = upload(owner, "acme", kb.pk, {"copy.txt": b"Refunds take five days."})
    assert again.status_code == 200  # nothing created
    (result,) = again.json()["results"]
    assert result["created"] is False and result["code"] == "duplicate"
    assert result["document"]["id"] == first["results"][0]["document"]["id"]
    assert "faq.txt" in result["message"]
    assert KnowledgeDocument.objects.count() == 1


def test_delete_removes_the_document_its_chunks_and_then_its_file(
    owner, kb, django_capture_on_commit_callbacks
):
    upload(owner, "acme", kb.pk, {"faq.txt": b"Refunds take five days."})
    ingest_queued(kb)
    document = KnowledgeDocument.objects.get()
    stored = document.file.name
    assert Chunk.objects.filter(document=document).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.delete(api("acme", f"knowledge-bases/{kb.pk}/documents/{document.pk}"))
    assert response.status_code == 204
    assert not Chunk.objects.exists() and not KnowledgeDocument.objects.exists()
    assert not default_storage.exists(stored)
    assert search(owner, "acme", kb.pk, "refunds", mode="keyword").json()["hits"] == []


def test_a_failed_delete_keeps_document_chunks_and_file(
    kb, workspace_a, alice_owner, owner, monkeypatch
):
    upload(owner, "acme", kb.pk, {"faq.txt": b"Refunds take five days."})
    ingest_queued(kb)
    document = KnowledgeDocument.objects.get()
    document_id, stored = document.pk, document.file.name
    chunks = Chunk.objects.filter(document=document).count()

    def broken_record(**kwargs: Any) -> None:
        raise RuntimeError("the audit trail is down")

    monkeypatch.setattr(services, "record", broken_record)
    with pytest.raises(RuntimeError):
        services.document_delete(
            workspace=workspace_a, acting=membership(workspace_a, alice_owner), document=document
        )
    assert KnowledgeDocument.objects.filter(pk=document_id).exists()
    assert Chunk.objects.filter(document_id=document_id).count() == chunks
    assert default_storage.exists(stored)


def test_changing_chunking_settings_reindexes_every_document(owner, kb):
    text = " ".join(f"Sentence number {i} is about refunds." for i in range(40))
    upload(owner, "acme", kb.pk, {"long.txt": text.encode()})
    ingest_queued(kb)
    document = KnowledgeDocument.objects.get()
    before_chunks, before_version = document.chunk_count, KnowledgeBase.objects.get().version
    response = owner.put(
        api("acme", f"knowledge-bases/{kb.pk}"),
        {"chunk_size": 600},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response.json()["version"] > before_version
    document.refresh_from_db()
    assert document.status == DocumentStatus.QUEUED
    assert not Chunk.objects.filter(searchable=True).exists()  # nothing answers meanwhile
    assert ingest_queued(kb) == ["indexed"]
    document.refresh_from_db()
    assert document.chunk_count < before_chunks
    assert Chunk.objects.filter(document=document).count() == document.chunk_count
    assert search(owner, "acme", kb.pk, "refunds", mode="keyword").json()["hits"]


def test_a_rerun_of_an_indexed_document_changes_nothing(owner, kb):
    from knowledge import ingestion

    upload(owner, "acme", kb.pk, {"faq.txt": b"Refunds take five days."})
    ingest_queued(kb)
    document = KnowledgeDocument.objects.get()
    chunk_ids = list(Chunk.objects.values_list("pk", flat=True))
    assert ingestion.ingest(document.pk) == "skipped"
    assert list(Chunk.objects.values_list("pk", flat=True)) == chunk_ids


# --- tenancy ------------------------------------------------------------------------------------
def test_another_workspace_never_retrieves_these_chunks(
    owner, kb, client_for, mallory_owner, workspace_b
):
    upload(owner, "acme", kb.pk, {"secret.txt": "订单状态 secret refund plan".encode()})
    ingest_queued(kb)
    theirs = make_kb(workspace_b, mallory_owner, name="Theirs")
    mallory = client_for(mallory_owner)
    assert search(mallory, "bravo", theirs.pk, "订单 refund", mode="keyword").json()["hits"] == []
    # Our knowledge base's id on their URL: the same 404 as a missing one.
    assert search(mallory, "bravo", kb.pk, "refund", mode="keyword").status_code == 404
    assert search(mallory, "acme", kb.pk, "refund", mode="keyword").status_code == 404
    response = mallory.get(api("bravo", f"knowledge-bases/{kb.pk}/documents"))
    assert response.status_code == 404


def test_viewer_reads_and_searches_but_cannot_upload(client_for, bob_viewer, kb):
    viewer = client_for(bob_viewer)
    assert viewer.get(api("acme", f"knowledge-bases/{kb.pk}/documents")).status_code == 200
    assert search(viewer, "acme", kb.pk, "x", mode="keyword").status_code == 200
    assert upload(viewer, "acme", kb.pk, {"a.txt": b"a"}).status_code == 403
    assert not KnowledgeDocument.objects.exists()


# --- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("empty.txt", b"", "empty_file"),
        ("photo.pdf", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "type_mismatch"),
        ("report.docx", b"just some text, not a word document", "type_mismatch"),
        ("notes.txt", b"%PDF-1.4\n" + b"\x00" * 64, "type_mismatch"),
        ("program.exe", b"MZ\x90\x00", "unsupported_type"),
    ],
)
def test_refused_uploads_store_nothing(name, data, code, owner, kb, settings):
    response = upload(owner, "acme", kb.pk, {name: data})
    assert response.status_code == 400, response.content
    assert name in str(response.json()["detail"])
    assert not KnowledgeDocument.objects.exists()
    media = Path(settings.MEDIA_ROOT)
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))
    assert not AuditEntry.objects.filter(action="knowledge_document.upload").exists()


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("locked.pdf", make_encrypted_pdf(), "encrypted_pdf"),
        ("broken.pdf", make_damaged_pdf(), "corrupt_file"),
        ("bomb.docx", make_zip_bomb_docx(), "zip_bomb"),
        ("blank.pdf", make_pdf(["", ""]), "no_text"),
        ("spaces.txt", b"   \n\n   \t  \n", "no_text"),
    ],
)
def test_bad_files_end_failed_with_the_reason_and_nothing_searchable(name, data, code, owner, kb):
    response = upload(owner, "acme", kb.pk, {name: data})
    assert response.status_code == 201, response.content
    assert ingest_queued(kb) == ["failed"]
    document = KnowledgeDocument.objects.get()
    assert document.status == DocumentStatus.FAILED
    assert document.error_code == code
    assert document.error_message  # a sentence for the user
    assert not Chunk.objects.filter(searchable=True).exists()
    shown = owner.get(api("acme", f"knowledge-bases/{kb.pk}/documents/{document.pk}")).json()
    assert shown["status"] == "failed" and shown["error_code"] == code


def test_a_2gb_upload_is_refused_before_its_body_is_read(owner, kb):
    # The declared size is what is refused: the body sent is a few bytes, never 2 GB.
    response = owner.generic(
        "POST",
        api("acme", f"knowledge-bases/{kb.pk}/documents"),
        b"--x--\r\n",
        content_type="multipart/form-data; boundary=x",
        headers={"Content-Length": str(2 * 1024**3)},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"
    assert "2,147,483,648 bytes" in response.json()["detail"]
    assert not KnowledgeDocument.objects.exists()


def test_a_file_over_the_per_file_limit_is_refused(owner, kb, settings):
    settings.FLOWDECK_KNOWLEDGE = {**settings.FLOWDECK_KNOWLEDGE, "MAX_FILE_BYTES": 1000}
    response = upload(owner, "acme", kb.pk, {"big.txt": b"x" * 5000})
    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"
    assert not KnowledgeDocument.objects.exists()


def test_document_and_upload_count_limits(owner, kb, settings):
    settings.FLOWDECK_KNOWLEDGE = {
        **settings.FLOWDECK_KNOWLEDGE,
        "MAX_FILES_PER_UPLOAD": 2,
        "MAX_DOCUMENTS_PER_WORKSPACE": 3,
    }
    three = {f"{i}.txt": f"text {i}".encode() for i in range(3)}
    response = upload(owner, "acme", kb.pk, three)
    assert response.status_code == 400 and "At most 2 files" in str(response.json()["detail"])
    assert upload(owner, "acme", kb.pk, dict(list(three.items())[:2])).status_code == 201
    response = upload(owner, "acme", kb.pk, {"x.txt": b"x", "y.txt": b"y"})
    assert response.status_code == 400 and "at most 3 documents" in str(response.json()["detail"])
    assert KnowledgeDocument.objects.count() == 2


def test_retry_of_an_indexed_document_is_refused(owner, kb):
    upload(owner, "acme", kb.pk, {"faq.txt": b"Refunds take five days."})
    ingest_queued(kb)
    document = KnowledgeDocument.objects.get()
    response = owner.post(api("acme", f"knowledge-bases/{kb.pk}/documents/{document.pk}/retry"))
    assert response.status_code == 400


async def test_the_asgi_gate_answers_413_before_the_application_reads_the_body():
    from knowledge.uploads import RequestSizeLimit

    reached = []

    async def application(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])  # never, for an oversized upload

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/w/acme/knowledge-bases/1/documents",
        "headers": [(b"content-length", str(2 * 1024**3).encode())],
    }
    await RequestSizeLimit(application)(scope, receive, send)
    assert reached == []
    assert sent[0]["status"] == 413
    assert b"file_too_large" in sent[1]["body"]
    # Other requests pass through untouched.
    await RequestSizeLimit(application)({**scope, "path": "/api/w/acme/flows"}, receive, send)
    assert reached == ["/api/w/acme/flows"]


async def test_the_asgi_gate_stops_a_body_that_grows_past_the_limit(settings):
    from knowledge.uploads import RequestSizeLimit

    settings.FLOWDECK_KNOWLEDGE = {
        **settings.FLOWDECK_KNOWLEDGE,
        "MAX_FILE_BYTES": 10,
        "MAX_FILES_PER_UPLOAD": 1,
    }
    chunks = [{"type": "http.request", "body": b"x" * 600_000, "more_body": True}] * 3
    seen: list[str] = []

    async def application(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is answered to an aborted request")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/w/acme/knowledge-bases/1/documents",
        "headers": [],  # no Content-Length: a streamed body
    }
    await RequestSizeLimit(application)(scope, receive, send)
    assert seen == ["http.request", "http.disconnect"]
