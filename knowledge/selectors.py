"""Reads for knowledge bases: lists, lookups by id or name, always within a workspace."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

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
