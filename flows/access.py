"""The access layer for flows and credentials: fetch and authorise in one call.

Every door (pages, the API, the WebSocket consumer) loads a flow or a credential through
these, never with its own query: the member's role is checked first (below it: 403,
recorded as `access.denied`), then the row is looked up in the member's workspace only
(missing, deleted or another workspace's: the same 404, also recorded).
"""

from __future__ import annotations

from accounts.models import Membership, Role
from accounts.tenancy import get_scoped, require_flow_in_scope, require_role
from flows.models import Credential, Flow


def access_flow(
    membership: Membership,
    flow_id: object,
    *,
    minimum: str = Role.VIEWER,
    include_deleted: bool = False,
) -> Flow:
    """The flow `flow_id` of the member's workspace, for a member with `minimum` or more.
    A deleted flow is missing unless `include_deleted` (its runs and versions stay readable)."""
    require_role(membership, minimum)
    require_flow_in_scope(membership, flow_id, f"flow:{flow_id}")
    lookup: dict[str, object] = {"pk": flow_id}
    if not include_deleted:
        lookup["deleted_at__isnull"] = True
    return get_scoped(Flow, membership.workspace, **lookup)


def access_credential(
    membership: Membership, credential_id: object, *, minimum: str = Role.ADMIN
) -> Credential:
    """The credential `credential_id` of the member's workspace (admins manage them)."""
    require_role(membership, minimum)
    return get_scoped(Credential, membership.workspace, pk=credential_id)
