"""The access layer for conversations: fetch and authorise in one call (see flows.access):
role first (403, recorded), then the member's workspace only (the same 404 for missing
and another workspace's, recorded as `access.denied`)."""

from __future__ import annotations

from accounts.models import Membership, Role
from accounts.tenancy import get_scoped, require_flow_in_scope, require_role
from chat.models import Conversation


def access_conversation(
    membership: Membership, conversation_id: object, *, minimum: str = Role.VIEWER
) -> Conversation:
    """The conversation `conversation_id` of the member's workspace."""
    require_role(membership, minimum)
    conversation = get_scoped(Conversation, membership.workspace, pk=conversation_id)
    require_flow_in_scope(membership, conversation.flow_id, f"conversation:{conversation.pk}")
    return conversation
