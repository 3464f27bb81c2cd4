"""Pages for knowledge bases: the list (create, rename, delete) and one knowledge base
(settings, documents, upload, test retrieval).

Thin like the rest of the workspace UI: forms post here and call a service; uploads,
live ingestion progress and test retrieval run in the browser (static/knowledge.js)
against the JSON API and the knowledge WebSocket, with the same session. Viewers see the
pages without any form.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from accounts.models import Role
from accounts.tenancy import WorkspaceMixin
from flows import selectors as flow_selectors
from knowledge import selectors, services
from knowledge.access import access_document, access_knowledge_base
from knowledge.embeddings import EMBEDDING_PROVIDERS
from knowledge.models import DocumentStatus, KnowledgeBase
from knowledge.parsing import FORMATS

DEFAULT_CHUNK_SIZE = 800
DEFAULT_CHUNK_OVERLAP = 100


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        return -1  # never a primary key: the scoped lookup answers 404


def _int_or(value: str | None, default: int) -> int:
    """A number field of a form; a blank or non-number is the default (the service then
    judges the range)."""
    try:
        return int((value or "").strip())
    except ValueError:
        return default


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(
            f"{field.replace('_', ' ').capitalize()}: {' '.join(errors)}"
            if field != "__all__"
            else " ".join(errors)
            for field, errors in exc.message_dict.items()
        )
    return " ".join(exc.messages)


def _limits() -> dict[str, Any]:
    limits = settings.FLOWDECK_KNOWLEDGE
    return {
        "max_file_bytes": limits["MAX_FILE_BYTES"],
        "max_file_mb": limits["MAX_FILE_BYTES"] // (1024 * 1024),
        "max_files_per_upload": limits["MAX_FILES_PER_UPLOAD"],
        "max_documents": limits["MAX_DOCUMENTS_PER_WORKSPACE"],
        "max_chunks_per_document": limits["MAX_CHUNKS_PER_DOCUMENT"],
    }


def _embedding_credentials(workspace: Any) -> list[Any]:
    return list(
        flow_selectors.credentials_of(workspace)
        .filter(provider__in=EMBEDDING_PROVIDERS)
        .order_by("name")
    )


def _settings_from(form: Any) -> dict[str, Any]:
    """The settings fields of a create or settings form, as the services take them."""
    credential = (form.get("embedding_credential") or "").strip()
    return {
        "description": form.get("description", ""),
        "chunk_size": _int_or(form.get("chunk_size"), DEFAULT_CHUNK_SIZE),
        "chunk_overlap": _int_or(form.get("chunk_overlap"), DEFAULT_CHUNK_OVERLAP),
        # "" is keyword only; anything else must be a credential of this workspace (the
        # service checks, so a stranger's id is refused like a typo).
        "embedding_credential_id": _int(credential) if credential else None,
        "embedding_model": form.get("embedding_model", "").strip(),
    }


class KnowledgeListView(WorkspaceMixin, View):
    """The workspace's knowledge bases; editors create, rename and delete them."""

    role_map = {"GET": Role.VIEWER, "POST": Role.EDITOR}

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        bases = list(
            selectors.knowledge_bases_of(self.workspace).select_related("embedding_credential")
        )
        summaries = selectors.document_summaries(self.workspace)
        for kb in bases:
            kb.summary = summaries.get(kb.pk)  # type: ignore[attr-defined]  # for the template
        return render(
            request,
            "knowledge/kb_list.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "knowledge_bases": bases,
                "can_edit": self.membership.has_role(Role.EDITOR),
                "credentials": _embedding_credentials(self.workspace),
                "defaults": {
                    "chunk_size": DEFAULT_CHUNK_SIZE,
                    "chunk_overlap": DEFAULT_CHUNK_OVERLAP,
                },
                "limits": _limits(),
                "document_count": selectors.document_count(self.workspace),
            },
        )

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        action, form = request.POST.get("action"), request.POST
        common: dict[str, Any] = {"workspace": self.workspace, "acting": self.membership}
        try:
            if action == "create":
                kb = services.kb_create(**common, name=form.get("name", ""), **_settings_from(form))
                messages.success(request, f"Knowledge base “{kb.name}” created.")
                return redirect("knowledge_detail", slug=self.workspace.slug, kb_id=kb.pk)
            if action == "rename":
                kb = access_knowledge_base(
                    self.membership, _int(form.get("kb")), minimum=Role.EDITOR
                )
                kb = services.kb_update(**common, kb=kb, name=form.get("name", ""))
                messages.success(request, f"Renamed to “{kb.name}”.")
            elif action == "delete":
                kb = access_knowledge_base(
                    self.membership, _int(form.get("kb")), minimum=Role.EDITOR
                )
                name = kb.name
                services.kb_delete(**common, kb=kb)
                messages.success(request, f"Knowledge base “{name}” deleted with its documents.")
            else:
                messages.error(request, "Unknown action.")
        except ValidationError as exc:
            messages.error(request, _error_text(exc))
        return redirect("knowledge_list", slug=self.workspace.slug)


class KnowledgeDetailView(WorkspaceMixin, View):
    """One knowledge base: its settings, its documents with where their ingestion stands,
    the upload zone and a test-retrieval box. Editors change settings, retry and delete
    documents here; uploads go to the API from the page's script."""

    role_map = {"GET": Role.VIEWER, "POST": Role.EDITOR}

    def get(self, request: HttpRequest, slug: str, kb_id: int) -> HttpResponse:
        kb = access_knowledge_base(self.membership, kb_id)
        documents = list(selectors.documents_of(kb)[:2000])
        can_edit = self.membership.has_role(Role.EDITOR)
        limits = _limits()
        config = {
            "slug": self.workspace.slug,
            "knowledgeBase": kb.pk,
            "api": f"/api/w/{self.workspace.slug}/knowledge-bases/{kb.pk}",
            "socket": f"/ws/w/{self.workspace.slug}/knowledge?kb={kb.pk}",
            "canEdit": can_edit,
            "maxFileBytes": limits["max_file_bytes"],
            "extensions": sorted(FORMATS),
        }
        return render(
            request,
            "knowledge/kb_detail.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "kb": kb,
                "documents": documents,
                "summary": selectors.document_summaries(self.workspace).get(kb.pk),
                "can_edit": can_edit,
                "credentials": _embedding_credentials(self.workspace),
                "limits": limits,
                "accept": ",".join(f".{ext}" for ext in sorted(FORMATS)),
                "formats": ", ".join(
                    sorted({f.upper() if len(f) < 5 else f.capitalize() for f in FORMATS.values()})
                ),
                "config": config,
                "failed": DocumentStatus.FAILED,
            },
        )

    def post(self, request: HttpRequest, slug: str, kb_id: int) -> HttpResponse:
        kb = access_knowledge_base(self.membership, kb_id, minimum=Role.EDITOR)
        action, form = request.POST.get("action"), request.POST
        common: dict[str, Any] = {"workspace": self.workspace, "acting": self.membership}
        try:
            if action == "settings":
                self._save_settings(request, kb, form)
            elif action == "reindex":
                queued = services.kb_reindex(**common, kb=kb)
                messages.success(request, f"Re-indexing {queued} document(s).")
            elif action == "retry":
                document = access_document(
                    self.membership, kb.pk, _int(form.get("document")), minimum=Role.EDITOR
                )
                services.document_retry(**common, document=document)
                messages.success(request, f"“{document.name}” is queued again.")
            elif action == "delete_document":
                document = access_document(
                    self.membership, kb.pk, _int(form.get("document")), minimum=Role.EDITOR
                )
                services.document_delete(**common, document=document)
                messages.success(request, f"“{document.name}” deleted with its chunks.")
            else:
                messages.error(request, "Unknown action.")
        except ValidationError as exc:
            messages.error(request, _error_text(exc))
        return redirect("knowledge_detail", slug=self.workspace.slug, kb_id=kb.pk)

    def _save_settings(self, request: HttpRequest, kb: KnowledgeBase, form: Any) -> None:
        version = kb.version
        kb = services.kb_update(
            workspace=self.workspace,
            acting=self.membership,
            kb=kb,
            name=form.get("name", ""),
            **_settings_from(form),
        )
        if kb.version != version:
            messages.success(
                request,
                "Settings saved. Every document is being indexed again with them; "
                "until a document is indexed again it does not answer.",
            )
        else:
            messages.success(request, "Settings saved.")
