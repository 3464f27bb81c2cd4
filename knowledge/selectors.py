"""Reads for knowledge bases: lists, lookups by id or name, always within a workspace."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Q, QuerySet, Sum

from accounts.models import Workspace
from accounts.tenancy import scoped
from knowledge.models import DocumentStatus, KnowledgeBase, KnowledgeDocument


def knowledge_bases_of(workspace: Workspace) -> QuerySet[KnowledgeBase]:
    """The workspace's knowledge bases with their document counts."""
    return scoped(KnowledgeBase, workspace).annotate(
        document_count=Count("documents", distinct=True),
        indexed_count=Count(
            "documents", filter=Q(documents__status=DocumentStatus.INDEXED), distinct=True
        ),
    )


def knowledge_base_by_id(workspace: Workspace, kb_id: object) -> KnowledgeBase | None:
    """This workspace's knowledge base `kb_id`, or None (not found here, not an id)."""
    if isinstance(kb_id, bool) or not isinstance(kb_id, int):
        return None
    return scoped(KnowledgeBase, workspace).filter(pk=kb_id).first()


def knowledge_base_named(workspace: Workspace, name: str) -> KnowledgeBase | None:
    """This workspace's knowledge base called `name` (old graphs' `collection`), or None."""
    return scoped(KnowledgeBase, workspace).filter(name=name).first()


def documents_of(kb: KnowledgeBase) -> QuerySet[KnowledgeDocument]:
    return scoped(KnowledgeDocument, kb.workspace).filter(knowledge_base=kb)


def document_count(workspace: Workspace) -> int:
    return scoped(KnowledgeDocument, workspace).count()


@dataclass(frozen=True)
class DocumentSummary:
    """Where a knowledge base's documents stand, for the pages (one query per workspace)."""

    documents: int
    chunks: int
    indexed: int
    failed: int
    updated_at: datetime | None

    @property
    def in_progress(self) -> int:
        return self.documents - self.indexed - self.failed


def document_summaries(workspace: Workspace) -> dict[int, DocumentSummary]:
    """Per knowledge base of `workspace`: document, chunk and status counts."""
    rows = (
        scoped(KnowledgeDocument, workspace)
        .values("knowledge_base_id")
        .annotate(
            documents=Count("pk"),
            chunk_total=Sum("chunk_count"),
            indexed=Count("pk", filter=Q(status=DocumentStatus.INDEXED)),
            failed=Count("pk", filter=Q(status=DocumentStatus.FAILED)),
            last_change=Max("updated_at"),
        )
        .order_by()
    )
    return {
        row["knowledge_base_id"]: DocumentSummary(
            documents=row["documents"],
            chunks=row["chunk_total"] or 0,
            indexed=row["indexed"],
            failed=row["failed"],
            updated_at=row["last_change"],
        )
        for row in rows
    }
