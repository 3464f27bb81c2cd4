"""Reads for accounts."""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from accounts.models import ApiToken, Invitation, Membership, User, Workspace
from accounts.tenancy import scoped


def memberships_of(user: User) -> list[Membership]:
    """The user's memberships, for the workspace switcher."""
    if not user.is_authenticated:
        return []
    return list(Membership.objects.select_related("workspace").filter(user=user))


def members_of(workspace: Workspace) -> QuerySet[Membership]:
    return scoped(Membership, workspace).select_related("user").order_by("user__email")


def pending_invitations(workspace: Workspace) -> QuerySet[Invitation]:
    return scoped(Invitation, workspace).filter(
        accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    )


def tokens_of(workspace: Workspace, user: User) -> QuerySet[ApiToken]:
    return scoped(ApiToken, workspace).filter(user=user)


def active_tokens(workspace: Workspace) -> QuerySet[ApiToken]:
    """Every member's unrevoked tokens of the workspace, with their holder and own budget
    (`budget`: the usage app's KeyBudget, joined through its reverse relation, as
    accounts sits below usage), by holder and name."""
    return (
        scoped(ApiToken, workspace)
        .filter(revoked_at__isnull=True)
        .select_related("user", "budget")
        .order_by("user__email", "name", "pk")
    )


def flow_names(workspace: Workspace) -> dict[int, str]:
    """The workspace's live flows, id -> name by name: what a key can be scoped to (read
    through the workspace's reverse relation, as accounts sits below flows)."""
    rows = (
        workspace.flows.filter(deleted_at__isnull=True, is_scratch=False)
        .order_by("name", "pk")
        .values_list("pk", "name")
    )
    return dict(rows)


def session_signs_in(session_key: str | None, user: User) -> bool:
    """Whether the stored session `session_key` still signs in `user`: not flushed (logout),
    not another user's, and made with the user's current password (Django's session
    auth hash: a password change or reset ends every session but the one that changed it,
    which `update_session_auth_hash` re-stamps)."""
    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    if str(store.get(SESSION_KEY, "")) != str(user.pk):
        return False
    stored_hash = store.get(HASH_SESSION_KEY) or ""
    return constant_time_compare(stored_hash, user.get_session_auth_hash())


def access_still_valid(
    *, membership_id: int, token_id: int | None = None, session_key: str | None = None
) -> Membership | None:
    """The membership (fresh, with its user) if the credential a long-lived connection
    opened with still grants it: the token unrevoked, or the session still signing the user
    in; the user active; the membership not removed. None when access has ended."""
    membership = (
        Membership.objects.select_related("user", "workspace")
        .filter(pk=membership_id, user__is_active=True)
        .first()
    )
    if membership is None:
        return None
    if token_id is not None:
        alive = ApiToken.objects.filter(
            pk=token_id, user_id=membership.user_id, revoked_at__isnull=True
        ).exists()
    else:
        alive = session_signs_in(session_key, membership.user)
    return membership if alive else None
