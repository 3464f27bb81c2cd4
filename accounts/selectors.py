"""Reads for accounts."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

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
