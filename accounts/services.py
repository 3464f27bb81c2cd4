"""Writes for accounts: workspaces, memberships, invitations and API tokens."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken, Invitation, Membership, Role, TokenScope, User, Workspace
from accounts.tenancy import get_scoped, require_role, scoped
from audit.services import record

log = logging.getLogger(__name__)

TOKEN_PREFIX = "fdk_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def workspace_create(*, name: str, slug: str, owner: User) -> Workspace:
    workspace = Workspace(name=name, slug=slug)
    workspace.full_clean()
    workspace.save()
    Membership.objects.create(user=owner, workspace=workspace, role=Role.OWNER)
    log.info("workspace created", extra={"workspace": slug, "owner": owner.pk})
    return workspace


# --- invitations ------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str

    def path(self) -> str:
        return f"/invite/{self.token}/"


@transaction.atomic
def invitation_create(
    *, workspace: Workspace, acting: Membership, email: str, role: str, base_url: str = ""
) -> IssuedInvitation:
    """Invite `email` with `role`; mails the link (console backend unless SMTP is set)."""
    require_role(acting, Role.ADMIN)
    email = User.objects.normalize_email(email).strip().lower()
    if role not in Role.values:
        raise ValidationError({"role": "Unknown role."})
    if role == Role.OWNER and acting.role != Role.OWNER:
        raise ValidationError({"role": "Only owners can invite owners."})
    if Membership.objects.filter(workspace=workspace, user__email__iexact=email).exists():
        raise ValidationError({"email": "This person is already a member."})
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        workspace=workspace,
        email=email,
        role=role,
        token_hash=hash_secret(token),
        invited_by=acting.user,
        expires_at=timezone.now() + settings.INVITATION_TTL,
    )
    invitation.full_clean()
    invitation.save()
    record(
        action="member.invite",
        workspace=workspace,
        actor=acting.user,
        target=f"invitation:{invitation.pk}",
        after={"email": email, "role": role},
    )
    issued = IssuedInvitation(invitation, token)
    link = f"{base_url}{issued.path()}"
    transaction.on_commit(
        lambda: send_mail(
            f"You are invited to {workspace.name} on Flowdeck",
            f"{acting.user.display_name} invited you to join {workspace.name} as {role}.\n\n"
            f"Accept: {link}\n\nThe link expires on {invitation.expires_at:%Y-%m-%d %H:%M} UTC.",
            None,
            [email],
            fail_silently=True,
        )
    )
    log.info("invitation created", extra={"workspace": workspace.slug, "invitation": invitation.pk})
    return issued


def invitation_for_token(token: str) -> Invitation | None:
    """The pending invitation behind a link, or None (unknown, used, revoked or expired)."""
    invitation = (
        Invitation.objects.select_related("workspace").filter(token_hash=hash_secret(token)).first()
    )
    if invitation is None or not invitation.is_pending:
        return None
    return invitation


def _pending_invitation_locked(token: str) -> Invitation:
    invitation = invitation_for_token(token)
    if invitation is None:
        raise ValidationError("This invitation is invalid or has expired.")
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_pending:
        raise ValidationError("This invitation is invalid or has expired.")
    return invitation


@transaction.atomic
def invitation_accept(
    *, token: str, user: User | None = None, password: str = "", name: str = ""
) -> Membership:
    """Join the workspace through an invitation, as `user` or, when None, as a new account
    for the invited address with `password`: all or nothing, in one transaction, so a
    revoked or expired invitation creates no account (and the caller signs in only the
    member this returns)."""
    invitation = _pending_invitation_locked(token)
    if user is None:
        if User.objects.filter(email__iexact=invitation.email).exists():
            raise ValidationError("Sign in as the invited address to accept the invitation.")
        user = User.objects.create_user(invitation.email, password, name=name)
    if user.email.lower() != invitation.email.lower():
        raise ValidationError("This invitation was sent to another email address.")
    membership, created = Membership.objects.get_or_create(
        user=user, workspace=invitation.workspace, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    record(
        action="member.join",
        workspace=invitation.workspace,
        actor=user,
        target=f"membership:{membership.pk}",
        after={"role": membership.role, "invitation": invitation.pk, "already_member": not created},
    )
    return membership


@transaction.atomic
def invitation_revoke(*, workspace: Workspace, acting: Membership, invitation_id: int) -> None:
    require_role(acting, Role.ADMIN)
    invitation = get_scoped(Invitation, workspace, pk=invitation_id)
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    record(
        action="member.invite_revoke",
        workspace=workspace,
        actor=acting.user,
        target=f"invitation:{invitation.pk}",
        before={"email": invitation.email, "role": invitation.role},
    )


# --- memberships ------------------------------------------------------------------------


def _lock_owners(workspace: Workspace) -> int:
    return len(
        list(
            scoped(Membership, workspace)
            .select_for_update()
            .filter(role=Role.OWNER)
            .values_list("pk", flat=True)
        )
    )


@transaction.atomic
def membership_change_role(
    *, workspace: Workspace, acting: Membership, membership_id: int, role: str
) -> Membership:
    require_role(acting, Role.ADMIN)
    if role not in Role.values:
        raise ValidationError({"role": "Unknown role."})
    target = get_scoped(Membership, workspace, pk=membership_id)
    touches_owner = Role.OWNER in (role, target.role)
    if touches_owner and acting.role != Role.OWNER:
        raise ValidationError({"role": "Only owners can grant or take away the owner role."})
    if target.role == Role.OWNER and role != Role.OWNER and _lock_owners(workspace) <= 1:
        raise ValidationError({"role": "A workspace always keeps at least one owner."})
    before = {"role": target.role, "email": target.user.email}
    target.role = role
    target.save(update_fields=["role"])
    record(
        action="member.role_change",
        workspace=workspace,
        actor=acting.user,
        target=f"membership:{target.pk}",
        before=before,
        after={"role": role},
    )
    return target


@transaction.atomic
def membership_remove(*, workspace: Workspace, acting: Membership, membership_id: int) -> None:
    target = get_scoped(Membership, workspace, pk=membership_id)
    if target.pk != acting.pk:  # anyone may leave; removing others needs admin
        require_role(acting, Role.ADMIN)
        if target.role == Role.OWNER and acting.role != Role.OWNER:
            raise ValidationError("Only owners can remove an owner.")
    if target.role == Role.OWNER and _lock_owners(workspace) <= 1:
        raise ValidationError("A workspace always keeps at least one owner.")
    before, label = {"role": target.role, "email": target.user.email}, f"membership:{target.pk}"
    target.delete()
    record(
        action="member.remove", workspace=workspace, actor=acting.user, target=label, before=before
    )


# --- API tokens -------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


MAX_KEY_RATE_PER_MINUTE = 100_000


@transaction.atomic
def api_token_create(
    *,
    workspace: Workspace,
    user: User,
    name: str,
    flow_ids: Collection[int] | None = None,
    expires_at: datetime | None = None,
    rate_limit_per_minute: int | None = None,
) -> IssuedToken:
    """A new token for `user` in `workspace`; the secret is returned once and never stored.

    `flow_ids`: scope it to those flows of the workspace (None: the whole workspace);
    `expires_at`: refused from then on; `rate_limit_per_minute`: requests a minute."""
    if not Membership.objects.filter(workspace=workspace, user=user).exists():
        raise ValidationError("Only members can hold tokens for a workspace.")
    name = (name or "").strip() or "API token"
    scope = TokenScope.WORKSPACE
    ids: list[int] = []
    if flow_ids is not None:
        ids = sorted(set(flow_ids))
        live = set(
            workspace.flows.filter(
                pk__in=ids, deleted_at__isnull=True, is_scratch=False
            ).values_list("pk", flat=True)
        )
        if not ids or live != set(ids):
            raise ValidationError({"flows": ["Name one or more flows of this workspace."]})
        scope = TokenScope.FLOWS
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": ["An expiry must be in the future."]})
    if rate_limit_per_minute is not None and not (
        1 <= rate_limit_per_minute <= MAX_KEY_RATE_PER_MINUTE
    ):
        raise ValidationError(
            {"rate_limit": [f"A rate limit is 1 to {MAX_KEY_RATE_PER_MINUTE} a minute."]}
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        workspace=workspace,
        user=user,
        name=name[:100],
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        token_hash=hash_secret(secret),
        scope=scope,
        flow_ids=ids,
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    token.full_clean()
    token.save()
    record(
        action="token.create",
        workspace=workspace,
        actor=user,
        target=f"token:{token.pk}",
        after=_token_summary(token),
    )
    return IssuedToken(token, secret)


def _token_summary(token: ApiToken) -> dict[str, object]:
    """What the trail keeps of a token: never its secret; its limits when it has them."""
    summary: dict[str, object] = {"name": token.name, "prefix": token.prefix}
    if token.flow_scope is not None:
        summary["flows"] = sorted(token.flow_scope)
    if token.expires_at is not None:
        summary["expires_at"] = token.expires_at.isoformat()
    if token.rate_limit_per_minute is not None:
        summary["rate_limit_per_minute"] = token.rate_limit_per_minute
    return summary


@transaction.atomic
def api_token_revoke(*, workspace: Workspace, acting: Membership, token_id: int) -> ApiToken:
    """Revoke a token: its owner may, and so may workspace admins."""
    token = get_scoped(ApiToken, workspace, pk=token_id)
    if token.user_id != acting.user_id:
        require_role(acting, Role.ADMIN)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        record(
            action="token.revoke",
            workspace=workspace,
            actor=acting.user,
            target=f"token:{token.pk}",
            before={"name": token.name, "prefix": token.prefix, "owner": token.user_id},
        )
    return token


def api_token_authenticate(secret: str) -> ApiToken | None:
    """The active token behind a bearer secret (with user and workspace), or None: revoked
    and expired tokens are None alike.

    Records last use at most once a minute so a busy client does not write on every call.
    """
    if not secret or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user", "workspace")
        .filter(token_hash=hash_secret(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    now = timezone.now()
    if token is None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
