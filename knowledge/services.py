"""Writes for knowledge bases and their documents.

Keyword-only, typed, atomic, audited. Editors manage knowledge bases and documents. Files
are stored through Django's storage API; a file leaves storage only after the transaction
that deleted its row committed (a rolled-back delete keeps both). Ingestion is queued after
commit (knowledge.tasks), and every change a watcher should see is published after commit
(knowledge.progress).
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F

from accounts.models import Membership, Role, Workspace
from accounts.tenancy import require_role, scoped
from audit.services import record
from flows.models import Credential
from knowledge import ingestion, progress, tasks
from knowledge.embeddings import EMBEDDING_PROVIDERS, MAX_DIMENSIONS
from knowledge.models import (
    Chunk,
    DocumentStatus,
    KnowledgeBase,
    KnowledgeDocument,
)
from knowledge.parsing import ParseError, sniff
from knowledge.selectors import knowledge_base_named
from knowledge.vectorstore import get_store

log = logging.getLogger(__name__)

NAME_MAX = 200
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
CHUNK_SIZE_RANGE = (100, 8000)
SNIFF_BYTES = 8192


def limits() -> dict[str, int]:
    return settings.FLOWDECK_KNOWLEDGE


class UploadRefused(Exception):
    """An upload refused before anything was stored: `code`, a sentence, an HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def _same_workspace(workspace: Workspace, *objs: Any) -> None:
    for obj in objs:
        if obj.workspace_id != workspace.pk:
            raise ValidationError("That object is not of this workspace.")


def _acting_in(workspace: Workspace, acting: Membership, minimum: str) -> None:
    require_role(acting, minimum)
    if acting.workspace_id != workspace.pk:
        raise ValidationError("The membership is not of this workspace.")


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["This field is required."]})
    if len(name) > NAME_MAX:
        raise ValidationError({"name": [f"At most {NAME_MAX} characters."]})
    return name


def _settings_snapshot(kb: KnowledgeBase) -> dict[str, Any]:
    return {
        "name": kb.name,
        "chunk_size": kb.chunk_size,
        "chunk_overlap": kb.chunk_overlap,
        "embedding_credential": kb.embedding_credential_id,
        "embedding_model": kb.embedding_model,
        "embedding_dimensions": kb.embedding_dimensions,
    }


@dataclass(frozen=True)
class KbSettings:
    chunk_size: int
    chunk_overlap: int
    credential_id: int | None
    model: str
    dimensions: int | None


def _clean_settings(workspace: Workspace, values: KbSettings) -> KbSettings:
    errors: dict[str, list[str]] = {}
    low, high = CHUNK_SIZE_RANGE
    if not low <= values.chunk_size <= high:
        errors["chunk_size"] = [f"From {low} to {high} characters."]
    if not 0 <= values.chunk_overlap < max(values.chunk_size // 2, 1):
        errors["chunk_overlap"] = ["From 0 to less than half the chunk size."]
    model = (values.model or "").strip()
    if values.credential_id is not None:
        credential = scoped(Credential, workspace).filter(pk=values.credential_id).first()
        if credential is None:
            errors["embedding_credential"] = ["No such credential in this workspace."]
        elif credential.provider not in EMBEDDING_PROVIDERS:
            errors["embedding_credential"] = [
                "Embeddings need an OpenAI-compatible or Ollama credential."
            ]
        if not model:
            errors["embedding_model"] = ["Name the embeddings model of this credential."]
    if model and not MODEL_NAME_RE.match(model):
        errors["embedding_model"] = ["Letters, digits and ._:/@+- only, up to 200."]
    if values.dimensions is not None and not 1 <= values.dimensions <= MAX_DIMENSIONS:
        errors["embedding_dimensions"] = [f"From 1 to {MAX_DIMENSIONS}."]
    if errors:
        raise ValidationError(errors)
    return KbSettings(
        values.chunk_size,
        values.chunk_overlap,
        values.credential_id,
        model if values.credential_id is not None else "",
        values.dimensions if values.credential_id is not None else None,
    )


def _name_taken(workspace: Workspace, name: str, exclude: int | None = None) -> bool:
    query = scoped(KnowledgeBase, workspace).filter(name=name)
    if exclude is not None:
        query = query.exclude(pk=exclude)
    return query.exists()


# --- knowledge bases ------------------------------------------------------------------------
@transaction.atomic
def kb_create(
    *,
    workspace: Workspace,
    acting: Membership,
    name: str,
    description: str = "",
    chunk_size: int = 800,
    chunk_overlap: int = 100,
    embedding_credential_id: int | None = None,
    embedding_model: str = "",
    embedding_dimensions: int | None = None,
) -> KnowledgeBase:
    """A new, empty knowledge base. Without an embeddings credential it is keyword-only."""
    _acting_in(workspace, acting, Role.EDITOR)
    name = _clean_name(name)
    if len(description or "") > 5000:
        raise ValidationError({"description": ["At most 5000 characters."]})
    if _name_taken(workspace, name):
        raise ValidationError({"name": ["A knowledge base with this name exists already."]})
    values = _clean_settings(
        workspace,
        KbSettings(
            chunk_size,
            chunk_overlap,
            embedding_credential_id,
            embedding_model,
            embedding_dimensions,
        ),
    )
    kb = KnowledgeBase.objects.create(
        workspace=workspace,
        name=name,
        description=description or "",
        chunk_size=values.chunk_size,
        chunk_overlap=values.chunk_overlap,
        embedding_credential_id=values.credential_id,
        embedding_model=values.model,
        embedding_dimensions=values.dimensions,
        created_by=acting.user,
    )
    record(
        action="knowledge_base.create",
        workspace=workspace,
        actor=acting.user,
        target=f"knowledge_base:{kb.pk}",
        after=_settings_snapshot(kb),
    )
    return kb


_UNSET: Any = object()


@transaction.atomic
def kb_update(
    *,
    workspace: Workspace,
    acting: Membership,
    kb: KnowledgeBase,
    name: str | None = None,
    description: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    embedding_credential_id: int | None = _UNSET,
    embedding_model: str | None = None,
    embedding_dimensions: int | None = _UNSET,
) -> KnowledgeBase:
    """Rename or change settings. A change of chunking or embedding settings bumps the
    version and re-indexes every document (only what changed is redone)."""
    _acting_in(workspace, acting, Role.EDITOR)
    _same_workspace(workspace, kb)
    kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
    before = _settings_snapshot(kb)
    if name is not None:
        name = _clean_name(name)
        if _name_taken(workspace, name, exclude=kb.pk):
            raise ValidationError({"name": ["A knowledge base with this name exists already."]})
        kb.name = name
    if description is not None:
        if len(description) > 5000:
            raise ValidationError({"description": ["At most 5000 characters."]})
        kb.description = description
    credential_id = (
        kb.embedding_credential_id if embedding_credential_id is _UNSET else embedding_credential_id
    )
    model = kb.embedding_model if embedding_model is None else embedding_model
    embedding_changed = (credential_id, model.strip()) != (
        kb.embedding_credential_id,
        kb.embedding_model,
    )
    if embedding_dimensions is _UNSET:
        dimensions = None if embedding_changed else kb.embedding_dimensions
    else:
        dimensions = embedding_dimensions
    values = _clean_settings(
        workspace,
        KbSettings(
            kb.chunk_size if chunk_size is None else chunk_size,
            kb.chunk_overlap if chunk_overlap is None else chunk_overlap,
            credential_id,
            model,
            dimensions,
        ),
    )
    old_chunking, old_embedding = kb.chunking_fingerprint, kb.embedding_fingerprint
    old_dimensions = kb.embedding_dimensions
    kb.chunk_size, kb.chunk_overlap = values.chunk_size, values.chunk_overlap
    kb.embedding_credential_id, kb.embedding_model = values.credential_id, values.model
    kb.embedding_dimensions = values.dimensions
    reindex = (kb.chunking_fingerprint, kb.embedding_fingerprint) != (old_chunking, old_embedding)
    if reindex or kb.embedding_dimensions != old_dimensions:
        kb.version += 1
    kb.save()
    if kb.embedding_dimensions != old_dimensions:
        kb_id = kb.pk
        # The old index was built for the old dimensions; the next ingestion makes the new.
        transaction.on_commit(lambda: _drop_vector_index(kb_id))
    after = _settings_snapshot(kb)
    record(
        action="knowledge_base.update",
        workspace=workspace,
        actor=acting.user,
        target=f"knowledge_base:{kb.pk}",
        before={k: v for k, v in before.items() if after[k] != v},
        after={**{k: v for k, v in after.items() if before[k] != v}, "reindex": reindex},
    )
    if reindex or kb.embedding_dimensions != old_dimensions:
        _requeue(kb, scoped(KnowledgeDocument, workspace).filter(knowledge_base=kb))
    return kb


def _drop_vector_index(kb_id: int) -> None:
    try:
        get_store().drop_knowledge_base(kb_id)
    except Exception:  # best effort: an unused index only costs space
        log.warning("dropping the vector index of knowledge base %s failed", kb_id, exc_info=True)


def _requeue(kb: KnowledgeBase, documents: Iterable[KnowledgeDocument]) -> list[int]:
    """Put documents back in the queue (their chunks stop answering until indexed again)
    and dispatch them after commit. A worker holding one loses its lease and stops."""
    ids = [d.pk for d in documents]
    if not ids:
        return []
    KnowledgeDocument.objects.filter(pk__in=ids).update(
        status=DocumentStatus.QUEUED,
        error_code="",
        error_message="",
        progress_done=0,
        progress_total=0,
        lease_token="",
        lease_expires_at=None,
    )
    Chunk.objects.filter(document_id__in=ids).update(searchable=False)
    for document_id in ids:
        transaction.on_commit(partial(tasks.dispatch_ingestion, document_id))
    progress.publish_documents_after_commit(kb, ids)
    return ids


@transaction.atomic
def kb_reindex(*, workspace: Workspace, acting: Membership, kb: KnowledgeBase) -> int:
    """Index every document of `kb` again (e.g. after the embeddings model was updated at
    the provider under the same name). Returns how many were queued."""
    _acting_in(workspace, acting, Role.EDITOR)
    _same_workspace(workspace, kb)
    KnowledgeBase.objects.filter(pk=kb.pk).update(version=F("version") + 1)
    documents = scoped(KnowledgeDocument, workspace).filter(knowledge_base=kb)
    # Forget what was made, so everything is made again.
    documents.update(chunking_fingerprint="", embedding_fingerprint="")
    ids = _requeue(kb, documents)
    record(
        action="knowledge_base.reindex",
        workspace=workspace,
        actor=acting.user,
        target=f"knowledge_base:{kb.pk}",
        after={"documents": len(ids)},
    )
    return len(ids)


@transaction.atomic
def kb_delete(*, workspace: Workspace, acting: Membership, kb: KnowledgeBase) -> None:
    """Delete a knowledge base with its documents and chunks (one transaction); its files
    and vector index go after commit."""
    _acting_in(workspace, acting, Role.EDITOR)
    _same_workspace(workspace, kb)
    files = list(
        scoped(KnowledgeDocument, workspace)
        .filter(knowledge_base=kb)
        .exclude(file="")
        .values_list("file", flat=True)
    )
    before = {**_settings_snapshot(kb), "documents": len(files)}
    kb_id = kb.pk
    Chunk.objects.filter(knowledge_base_id=kb_id).delete()
    KnowledgeDocument.objects.filter(knowledge_base_id=kb_id).delete()
    kb.delete()
    record(
        action="knowledge_base.delete",
        workspace=workspace,
        actor=acting.user,
        target=f"knowledge_base:{kb_id}",
        before=before,
    )
    transaction.on_commit(lambda: _delete_files(files))
    transaction.on_commit(lambda: _drop_vector_index(kb_id))


def _delete_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # the row is gone; a leftover file is only space
            log.warning("deleting the stored file %s failed", name, exc_info=True)


# --- documents ------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_document_name(name: str) -> str:
    """A file name as shown to users: its last path part, printable, at most 255 chars."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL.sub("", name).strip()
    if not name:
        raise UploadRefused("invalid_name", "The file has no usable name.")
    return name[:255]


def check_upload_count(workspace: Workspace, files: int) -> None:
    """Refuse an upload of `files` files before any is read (per-upload and per-workspace
    limits)."""
    per_upload = limits()["MAX_FILES_PER_UPLOAD"]
    if files < 1:
        raise UploadRefused("no_files", "Choose at least one file.")
    if files > per_upload:
        raise UploadRefused("too_many_files", f"At most {per_upload} files per upload.", status=400)
    cap = limits()["MAX_DOCUMENTS_PER_WORKSPACE"]
    if scoped(KnowledgeDocument, workspace).count() + files > cap:
        raise UploadRefused(
            "document_limit",
            f"This workspace may hold at most {cap} documents; delete some first.",
        )


def check_upload_size(size: int) -> None:
    cap = limits()["MAX_FILE_BYTES"]
    if size > cap:
        raise UploadRefused(
            "file_too_large",
            f"The file is {size:,} bytes; files are limited to {cap:,} bytes.",
            status=413,
        )
    if size <= 0:
        raise UploadRefused("empty_file", "The file is empty.")


def _hash_and_head(data: File) -> tuple[str, bytes, int]:
    digest = hashlib.sha256()
    head = b""
    size = 0
    data.seek(0)
    for piece in data.chunks():
        if len(head) < SNIFF_BYTES:
            head += piece[: SNIFF_BYTES - len(head)]
        digest.update(piece)
        size += len(piece)
    data.seek(0)
    return digest.hexdigest(), head, size


@dataclass(frozen=True)
class Upload:
    document: KnowledgeDocument
    created: bool  # False: the same bytes were in this knowledge base already


@transaction.atomic
def document_upload(
    *,
    workspace: Workspace,
    acting: Membership,
    kb: KnowledgeBase,
    name: str,
    data: File,
    dispatch: bool = True,
) -> Upload:
    """Store one file in `kb` and queue its ingestion. Checked before anything is stored:
    size, emptiness, the format its bytes show (the extension must not lie), the
    workspace's document limit. The same bytes uploaded again answer the existing
    document (`created` False)."""
    _acting_in(workspace, acting, Role.EDITOR)
    _same_workspace(workspace, kb)
    name = clean_document_name(name)
    declared = getattr(data, "size", None)
    try:
        if declared is not None:
            check_upload_size(int(declared))
        content_hash, head, size = _hash_and_head(data)
        check_upload_size(size)
    except UploadRefused as exc:
        exc.message = f"“{name}”: {exc.message}"
        raise
    existing = (
        scoped(KnowledgeDocument, workspace)
        .filter(knowledge_base=kb, content_hash=content_hash)
        .first()
    )
    if existing is not None:
        return Upload(existing, False)
    try:
        file_format = sniff(name, head)
    except ParseError as exc:
        raise UploadRefused(exc.code, str(exc)) from exc
    cap = limits()["MAX_DOCUMENTS_PER_WORKSPACE"]
    if scoped(KnowledgeDocument, workspace).count() >= cap:
        raise UploadRefused(
            "document_limit",
            f"This workspace may hold at most {cap} documents; delete some first.",
        )
    document = KnowledgeDocument(
        workspace=workspace,
        knowledge_base=kb,
        name=name,
        format=file_format,
        size=size,
        content_hash=content_hash,
        created_by=acting.user,
    )
    document.file.save(content_hash, data, save=False)
    stored = str(document.file.name)
    try:
        with transaction.atomic():
            document.save()
    except IntegrityError:  # the same bytes, uploaded at the same moment by someone else
        _delete_files([stored])
        existing = (
            scoped(KnowledgeDocument, workspace)
            .filter(knowledge_base=kb, content_hash=content_hash)
            .first()
        )
        if existing is None:
            raise
        return Upload(existing, False)
    except BaseException:
        _delete_files([stored])
        raise
    record(
        action="knowledge_document.upload",
        workspace=workspace,
        actor=acting.user,
        target=f"knowledge_document:{document.pk}",
        after={
            "knowledge_base": kb.pk,
            "name": document.name,
            "format": document.format,
            "size": size,
            "sha256": content_hash,
        },
    )
    document_id = document.pk
    if dispatch:
            transaction.on_commit(lambda: tasks.dispatch_ingestion(document_id))
    progress.publish_documents_after_commit(kb, [document_id])
    return Upload(document, True)


@transaction.atomic
def document_create_text(
    *,
    workspace: Workspace,
    acting: Membership,
    kb: KnowledgeBase,
    name: str,
    text: str,
    dispatch: bool = True,
) -> Upload:
    """A plain-text document from text (the old documents API and the starters)."""
    if not text:
        raise UploadRefused("empty_file", "The text is empty.")
    title = clean_document_name(name)
    filename = title if title.lower().endswith((".txt", ".md")) else f"{title}.txt"
    upload = document_upload(
        workspace=workspace,
        acting=acting,
        kb=kb,
        name=filename,
        data=ContentFile(text.encode("utf-8"), name=filename),
        dispatch=dispatch,
    )
    if upload.created and upload.document.name != title:
        upload.document.name = title
        upload.document.save(update_fields=["name"])
    return upload


@transaction.atomic
def document_delete(
    *, workspace: Workspace, acting: Membership, document: KnowledgeDocument
) -> None:
    """Delete a document and its chunks in one transaction; its file and vectors after
    commit."""
    _acting_in(workspace, acting, Role.EDITOR)
    _same_workspace(workspace, document)
    kb_id = document.knowledge_base_id
    chunk_ids = list(Chunk.objects.filter(document=document).values_list("pk", flat=True))
    Chunk.objects.filter(document=document).delete()
    before = {"knowledge_base": kb_id, "name": document.name, "sha256": document.content_hash}
    document_id, stored = document.pk, document.file.name
    document.delete()
    KnowledgeBase.objects.filter(pk=kb_id).update(version=F("version") + 1)
    record(
        action="knowledge_document.delete",
        workspace=workspace,
        actor=acting.user,
        target=f"knowledge_document:{document_id}",
        before=before,
    )
    if stored:
        transaction.on_commit(lambda: _delete_files([stored]))
    transaction.on_commit(lambda: _forget_vectors(kb_id, chunk_ids))
    progress.publish_deleted_after_commit(workspace.pk, kb_id, document_id)


def _forget_vectors(kb_id: int, chunk_ids: list[int]) -> None:
    try:
        get_store().delete_document(kb_id, chunk_ids)
    except Exception:  # rows are gone: a stray vector is never returned (the rows decide)
        log.warning("forgetting vectors of knowledge base %s failed", kb_id, exc_info=True)


@transaction.atomic
def document_retry(
    *, workspace: Workspace, acting: Membership, document: KnowledgeDocument
) -> KnowledgeDocument:
    """Queue a failed (or stuck) document again; what it had already made is kept."""
    _acting_in(workspace, acting, Role.EDITOR)
    _same_workspace(workspace, document)
    document = KnowledgeDocument.objects.select_for_update().get(pk=document.pk)
    if document.status == DocumentStatus.INDEXED:
        raise ValidationError({"status": ["This document is indexed already."]})
    before = {"status": document.status, "error_code": document.error_code}
    _requeue(document.knowledge_base, [document])
    record(
        action="knowledge_document.retry",
        workspace=workspace,
        actor=acting.user,
        target=f"knowledge_document:{document.pk}",
        before=before,
    )
    document.refresh_from_db()
    return document


# --- document collections (the older documents API, the demo and the starters) ----------------
@transaction.atomic
def collection_document_add(
    *,
    workspace: Workspace,
    acting: Membership,
    collection: str,
    title: str,
    text: str,
) -> Upload:
    """A text document in the knowledge base named `collection` (made if missing). Without
    an embeddings model it is chunked and indexed at once (pure Python), so a flow can
    search it in the same breath, as with the older document collections."""
    _acting_in(workspace, acting, Role.EDITOR)
    kb = knowledge_base_named(workspace, collection)
    if kb is None:
        kb = kb_create(workspace=workspace, acting=acting, name=collection)
    upload = document_create_text(
        workspace=workspace,
        acting=acting,
        kb=kb,
        name=title,
        text=text,
        dispatch=kb.has_embeddings,
    )
    if upload.created and not kb.has_embeddings:
        ingestion.ingest(upload.document.pk)
        upload.document.refresh_from_db()
    return upload
