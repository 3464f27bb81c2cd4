"""The access layer for runs: fetch and authorise in one call (see flows.access).

Pages, the API, SSE, the WebSocket consumer, exports and the compare page all load a run
through `access_run`: role first (403, recorded), then the member's workspace only (the
same 404 for missing and another workspace's, recorded as `access.denied`).
"""

from __future__ import annotations

from accounts.models import Membership, Role
from accounts.tenancy import get_scoped, require_flow_in_scope, require_role
from runs.models import Run


def access_run(membership: Membership, run_id: object, *, minimum: str = Role.VIEWER) -> Run:
    """The run `run_id` of the member's workspace, for a member with `minimum` or more."""
    require_role(membership, minimum)
    run = get_scoped(Run, membership.workspace, pk=run_id)
    require_flow_in_scope(membership, run.flow_id, f"run:{run.pk}")
    return run
