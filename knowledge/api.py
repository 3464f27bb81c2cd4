"""The knowledge API: knowledge bases, their documents (multipart upload), and search.

Thin: parse, check the role (`@minimum_role`, enforced by config.api), call a service or
selector. Viewers list, read and search; editors create, change, upload, delete, retry.
Documented in docs/knowledge.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Field, File, Router, Schema, Status
from ninja.files import UploadedFile
from pydantic import ConfigDict

from accounts.api_auth import DbInt, WorkspaceSlug, context, minimum_role
from accounts.models import Role
from knowledge import retrieval, selectors, services
from knowledge.access import access_document, access_knowledge_base
from knowledge.embeddings import EmbeddingError
from knowledge.models import KnowledgeBase
from knowledge.progress import document_state
from knowledge.vectorstore import ChunkFilter

router = Router(tags=["knowledge"])


# --- schemas ----------------------------------------------------------------------------------
class KnowledgeBaseIn(Schema):
    name: str = Field(..., max_length=200)
    description: str = Field("", max_length=5000)
    chunk_size: int = Field(800, ge=1, le=100_000)
    chunk_overlap: int = Field(100, ge=0, le=100_000)
    embedding_credential: DbInt | None = Field(
        None, description="A credential (OpenAI-compatible or Ollama); none: keyword only."
    )
    embedding_model: str = Field("", max_length=200)
    embedding_dimensions: int | None = Field(None, ge=1, le=2000)


class KnowledgeBaseUpdateIn(Schema):
    """Only the fields given change; `embedding_credential: null` removes embeddings."""

    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=5000)
    chunk_size: int | None = Field(None, ge=1, le=100_000)
    chunk_overlap: int | None = Field(None, ge=0, le=100_000)
    embedding_credential: DbInt | None = None
    embedding_model: str | None = Field(None, max_length=200)
    embedding_dimensions: int | None = Field(None, ge=1, le=2000)


class KnowledgeBaseOut(Schema):
    id: int
    name: str
    description: str
    chunk_size: int
    chunk_overlap: int
    embedding_credential: int | None
    embedding_model: str
    embedding_dimensions: int | None
    modes: list[str] = Field(..., description="The search modes this knowledge base offers.")
    version: int
    document_count: int
    indexed_count: int
    created_at: datetime
    updated_at: datetime


class ProgressOut(Schema):
    done: int
    total: int


class KnowledgeDocumentOut(Schema):
    id: int
    knowledge_base: int
    name: str
    format: str
    size: int
    status: str = Field(..., description="queued | parsing | embedding | indexed | failed")
    error_code: str
    error_message: str
    pages: int | None
    chunk_count: int
    progress: ProgressOut
    created_at: str | None
    updated_at: str | None


class UploadItemOut(Schema):
    name: str
    created: bool = Field(..., description="False: the same bytes were here already.")
    document: KnowledgeDocumentOut | None = None
    code: str | None = Field(None, description="Why this file was refused (then no document).")
    message: str | None = None


class UploadOut(Schema):
    results: list[UploadItemOut]


class UploadRefusedOut(Schema):
    code: str
    detail: str


class FilterIn(Schema):
    """Which chunks may answer: a fixed set of keys, no expressions (others are refused)."""

    model_config = ConfigDict(extra="forbid")

    documents: list[str] = Field(default_factory=list, max_length=100)
    formats: list[str] = Field(default_factory=list, max_length=10)
    page_from: int | None = Field(None, ge=1, le=1_000_000)
    page_to: int | None = Field(None, ge=1, le=1_000_000)


class SearchIn(Schema):
    query: str = Field(..., max_length=retrieval.MAX_QUERY_CHARS)
    mode: str = Field("hybrid", description="keyword | vector | hybrid")
    k: int = Field(5, ge=1, le=50)
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    filter: FilterIn | None = None


class HitOut(Schema):
    chunk_id: int
    score: float
    document_id: int
    document: str
    format: str
    page: int | None
    heading: str
    chunk: int
    text: str


class SearchOut(Schema):
    mode: str
    used: str
    notes: list[str]
    hits: list[HitOut]
    context: str


class RetryOut(KnowledgeDocumentOut):
    pass


class ReindexOut(Schema):
    queued: int


# --- helpers ----------------------------------------------------------------------------------
def _kb_out(kb: KnowledgeBase, counts: tuple[int, int] | None = None) -> dict[str, Any]:
    if counts is None:
        documents = selectors.documents_of(kb)
        counts = (documents.count(), documents.filter(status="indexed").count())
    return {
        "id": kb.pk,
        "name": kb.name,
        "description": kb.description,
        "chunk_size": kb.chunk_size,
        "chunk_overlap": kb.chunk_overlap,
        "embedding_credential": kb.embedding_credential_id,
        "embedding_model": kb.embedding_model,
        "embedding_dimensions": kb.embedding_dimensions,
        "modes": list(retrieval.MODES) if kb.has_embeddings else ["keyword", "hybrid"],
        "version": kb.version,
        "document_count": counts[0],
        "indexed_count": counts[1],
        "created_at": kb.created_at,
        "updated_at": kb.updated_at,
    }


def chunk_filter_from(payload: FilterIn | None) -> ChunkFilter:
    if payload is None:
        return ChunkFilter()
    return ChunkFilter(
        documents=tuple(payload.documents),
        formats=tuple(payload.formats),
        page_from=payload.page_from,
        page_to=payload.page_to,
    )


# --- knowledge bases ----------------------------------------------------------------------------
@router.get("knowledge-bases", response=list[KnowledgeBaseOut], summary="Knowledge bases")
@minimum_role(Role.VIEWER)
def kb_list(request: HttpRequest, slug: WorkspaceSlug) -> list[dict[str, Any]]:
    return [
        _kb_out(kb, (kb.document_count, kb.indexed_count))  # type: ignore[attr-defined]
        for kb in selectors.knowledge_bases_of(context(request).workspace)[:500]
    ]


@router.post("knowledge-bases", response={201: KnowledgeBaseOut})
@minimum_role(Role.EDITOR)
def kb_create(request: HttpRequest, slug: WorkspaceSlug, payload: KnowledgeBaseIn) -> Any:
    kb = services.kb_create(
        workspace=context(request).workspace,
        acting=context(request).membership,
        name=payload.name,
        description=payload.description,
        chunk_size=payload.chunk_size,
        chunk_overlap=payload.chunk_overlap,
        embedding_credential_id=payload.embedding_credential,
        embedding_model=payload.embedding_model,
        embedding_dimensions=payload.embedding_dimensions,
    )
    return Status(201, _kb_out(kb, (0, 0)))


@router.get("knowledge-bases/{kb_id}", response=KnowledgeBaseOut)
@minimum_role(Role.VIEWER)
def kb_detail(request: HttpRequest, slug: WorkspaceSlug, kb_id: DbInt) -> dict[str, Any]:
    return _kb_out(access_knowledge_base(context(request).membership, kb_id))


@router.put("knowledge-bases/{kb_id}", response=KnowledgeBaseOut)
@minimum_role(Role.EDITOR)
def kb_update(
    request: HttpRequest, slug: WorkspaceSlug, kb_id: DbInt, payload: KnowledgeBaseUpdateIn
) -> dict[str, Any]:
    kb = access_knowledge_base(context(request).membership, kb_id, minimum=Role.EDITOR)
    given = payload.model_fields_set
    extra: dict[str, Any] = {}
    if "embedding_credential" in given:
        extra["embedding_credential_id"] = payload.embedding_credential
    if "embedding_dimensions" in given:
        extra["embedding_dimensions"] = payload.embedding_dimensions
    kb = services.kb_update(
        workspace=context(request).workspace,
        acting=context(request).membership,
        kb=kb,
        name=payload.name,
        description=payload.description,
        chunk_size=payload.chunk_size,
        chunk_overlap=payload.chunk_overlap,
        embedding_model=payload.embedding_model,
        **extra,
    )
    return _kb_out(kb)


@router.delete("knowledge-bases/{kb_id}", response={204: None})
@minimum_role(Role.EDITOR)
def kb_delete(request: HttpRequest, slug: WorkspaceSlug, kb_id: DbInt) -> Any:
    kb = access_knowledge_base(context(request).membership, kb_id, minimum=Role.EDITOR)
    services.kb_delete(
        workspace=context(request).workspace, acting=context(request).membership, kb=kb
    )
    return Status(204, None)


@router.post("knowledge-bases/{kb_id}/reindex", response=ReindexOut)
@minimum_role(Role.EDITOR)
def kb_reindex(request: HttpRequest, slug: WorkspaceSlug, kb_id: DbInt) -> dict[str, int]:
    kb = access_knowledge_base(context(request).membership, kb_id, minimum=Role.EDITOR)
    queued = services.kb_reindex(
        workspace=context(request).workspace, acting=context(request).membership, kb=kb
    )
    return {"queued": queued}


@router.post(
    "knowledge-bases/{kb_id}/search",
    response=SearchOut,
    summary="Search a knowledge base (keyword, vector or hybrid)",
)
@minimum_role(Role.VIEWER)
def kb_search(request: HttpRequest, slug: WorkspaceSlug, kb_id: DbInt, payload: SearchIn) -> Any:
    kb = access_knowledge_base(context(request).membership, kb_id)
    try:
        result = retrieval.search(
            kb,
            payload.query,
            mode=payload.mode,
            k=payload.k,
            threshold=payload.threshold,
            chunk_filter=chunk_filter_from(payload.filter),
        )
    except retrieval.RetrievalRefused as exc:
        return Status(400, {"code": exc.code, "detail": exc.message})
    except EmbeddingError as exc:
        return Status(400, {"code": exc.code, "detail": exc.message})
    return {
        "mode": result.mode,
        "used": result.used,
        "notes": result.notes,
        "hits": [hit.__dict__ for hit in result.hits],
        "context": retrieval.context_text(result.hits),
    }


# --- documents ----------------------------------------------------------------------------------
@router.get("knowledge-bases/{kb_id}/documents", response=list[KnowledgeDocumentOut])
@minimum_role(Role.VIEWER)
def documents_list(request: HttpRequest, slug: WorkspaceSlug, kb_id: DbInt) -> list[dict]:
    kb = access_knowledge_base(context(request).membership, kb_id)
    return [document_state(d) for d in selectors.documents_of(kb)[:2000]]


@router.post(
    "knowledge-bases/{kb_id}/documents",
    response={201: UploadOut, 200: UploadOut, 413: UploadRefusedOut},
    summary="Upload documents (multipart, field `files`, several at once)",
)
@minimum_role(Role.EDITOR)
def documents_upload(
    request: HttpRequest,
    slug: WorkspaceSlug,
    kb_id: DbInt,
    files: list[UploadedFile] = File(...),  # noqa: B008 (django-ninja's declaration)
) -> Any:
    """Each file is stored and queued, or refused with a code and a sentence; a file whose
    bytes are in the knowledge base already answers that document (`created` false).
    201 when at least one document was created."""
    kb = access_knowledge_base(context(request).membership, kb_id, minimum=Role.EDITOR)
    workspace, acting = context(request).workspace, context(request).membership
    try:
        services.check_upload_count(workspace, len(files))
        for upload in files:
            if upload.size:  # an empty file is refused with its name, below
                services.check_upload_size(int(upload.size))
    except services.UploadRefused as exc:
        if exc.status == 413:
            return Status(413, {"code": exc.code, "detail": exc.message})
        raise ValidationError({"files": [exc.message]}) from exc
    results: list[dict[str, Any]] = []
    created_any = False
    for upload in files:
        name = upload.name or "unnamed"
        try:
            outcome = services.document_upload(
                workspace=workspace, acting=acting, kb=kb, name=name, data=upload
            )
        except services.UploadRefused as exc:
            results.append({"name": name, "created": False, **exc.as_dict()})
            continue
        created_any = created_any or outcome.created
        results.append(
            {
                "name": name,
                "created": outcome.created,
                "document": document_state(outcome.document),
                **(
                    {}
                    if outcome.created
                    else {
                        "code": "duplicate",
                        "message": f"The same file is here already as “{outcome.document.name}”.",
                    }
                ),
            }
        )
    if not created_any and all(r.get("document") is None for r in results):
        # Nothing stored: every file was refused.
        raise ValidationError({"files": [f"{r['name']}: {r['message']}" for r in results]})
    return Status(201 if created_any else 200, {"results": results})


@router.get("knowledge-bases/{kb_id}/documents/{doc_id}", response=KnowledgeDocumentOut)
@minimum_role(Role.VIEWER)
def documents_detail(
    request: HttpRequest, slug: WorkspaceSlug, kb_id: DbInt, doc_id: DbInt
) -> dict[str, Any]:
    return document_state(access_document(context(request).membership, kb_id, doc_id))


@router.delete("knowledge-bases/{kb_id}/documents/{doc_id}", response={204: None})
@minimum_role(Role.EDITOR)
def documents_delete(request: HttpRequest, slug: WorkspaceSlug, kb_id: DbInt, doc_id: DbInt) -> Any:
    document = access_document(context(request).membership, kb_id, doc_id, minimum=Role.EDITOR)
    services.document_delete(
        workspace=context(request).workspace, acting=context(request).membership, document=document
    )
    return Status(204, None)


@router.post("knowledge-bases/{kb_id}/documents/{doc_id}/retry", response=RetryOut)
@minimum_role(Role.EDITOR)
def documents_retry(
    request: HttpRequest, slug: WorkspaceSlug, kb_id: DbInt, doc_id: DbInt
) -> dict[str, Any]:
    document = access_document(context(request).membership, kb_id, doc_id, minimum=Role.EDITOR)
    document = services.document_retry(
        workspace=context(request).workspace, acting=context(request).membership, document=document
    )
    return document_state(document)
