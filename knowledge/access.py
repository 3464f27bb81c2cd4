"""The access layer for knowledge bases and their documents: fetch and authorise in one call.

The member's role is checked first (below it: 403, recorded), then the row is looked up in
the member's workspace only (missing or another workspace's: the same 404, recorded).
Viewers read and search; editors manage."""

from __future__ import annotations

from accounts.models import Membership, Role
from accounts.tenancy import get_scoped, require_role
from knowledge.models import KnowledgeBase, KnowledgeDocument


def access_knowledge_base(
    membership: Membership, kb_id: object, *, minimum: str = Role.VIEWER
) -> KnowledgeBase:
    """The knowledge base `kb_id` of the member's workspace, for `minimum` or more."""
    require_role(membership, minimum)
    return get_scoped(KnowledgeBase, membership.workspace, pk=kb_id)


def access_document(
    membership: Membership, kb_id: object, document_id: object, *, minimum: str = Role.VIEWER
) -> KnowledgeDocument:
    """The document `document_id` of knowledge base `kb_id` in the member's workspace."""
    require_role(membership, minimum)
    return get_scoped(
        KnowledgeDocument, membership.workspace, pk=document_id, knowledge_base_id=kb_id
    )
