"""Users, workspaces (the tenant), memberships, invitations and API tokens."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.utils import timezone


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)

    def get_by_natural_key(self, username: str | None) -> User:
        return self.get(email__iexact=username or "")


class User(AbstractBaseUser, PermissionsMixin):
    """A person. Logs in with an email address; belongs to workspaces through memberships."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="Platform staff: may use the admin.")
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []
    # Set by AbstractBaseUser.set_password until the next save; the stubs do not declare it.
    _password: str | None

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    @property
    def display_name(self) -> str:
        return self.name or self.email

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A password set on an existing user (the password page, a reset link, the admin,
        # `changepassword`) is recorded here, whichever door it came through, in the same
        # transaction as the new hash.
        password_changed = self._password is not None and not self._state.adding
        if not password_changed:
            super().save(*args, **kwargs)
            return
        # Here, not at the top: audit's models import this module (the audit entry's
        # actor and workspace), so audit cannot be imported while it loads.
        from audit import context
        from audit.services import record

        with transaction.atomic():
            super().save(*args, **kwargs)
            ctx = context.current()
            user = ctx.user if ctx is not None else None
            actor = user if getattr(user, "is_authenticated", False) else self  # a reset link
            record(action="auth.password_change", actor=actor, target=f"user:{self.pk}")


slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and inner hyphens.",
)


class Workspace(models.Model):
    """The tenant. Every tenant-owned row points at exactly one workspace."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    created_at = models.DateTimeField(auto_now_add=True)
    # Domains `tool.http_get` may reach from this workspace (issue 3); empty = none.
    http_allowlist = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    EDITOR = "editor", "Editor"
    ADMIN = "admin", "Admin"
    OWNER = "owner", "Owner"


ROLE_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2, Role.OWNER: 3}


def role_at_least(role: str, minimum: str) -> bool:
    return ROLE_RANK[Role(role)] >= ROLE_RANK[Role(minimum)]


class Membership(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.EDITOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="membership_unique")
        ]
        ordering = ["workspace__name", "user__email"]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"

    # Not a column: the flows the request's API key is scoped to (None: the whole
    # workspace), set by WorkspaceAuth for the request; the access_* helpers honour it.
    flow_scope: frozenset[int] | None = None

    def has_role(self, minimum: str) -> bool:
        return role_at_least(self.role, minimum)


class Invitation(models.Model):
    """An emailed link that lets its holder join a workspace with a role until it expires."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="invitations"
    )
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.EDITOR)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.workspace}"

    @property
    def is_pending(self) -> bool:
        return (
            self.accepted_at is None
            and self.revoked_at is None
            and self.expires_at > timezone.now()
        )


class TokenScope(models.TextChoices):
    WORKSPACE = "workspace", "Whole workspace"
    FLOWS = "flows", "Named flows"


class ApiToken(models.Model):
    """A per-workspace bearer token. Only its SHA-256 is stored; the secret is shown once.

    A key scoped to named flows (`scope` = flows) reaches only those flows, their runs and
    conversations; it has no other route. An expired key is refused like a revoked one."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="api_tokens"
    )
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="First characters, to recognise a token.")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    scope = models.CharField(max_length=10, choices=TokenScope.choices, default=TokenScope.WORKSPACE)
    # Flow ids (flows of this workspace), for scope = flows. Ids, not a relation: accounts
    # sits below flows; a deleted flow's id just stops matching anything.
    flow_ids = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    @property
    def flow_scope(self) -> frozenset[int] | None:
        """The flows this key reaches, or None for the whole workspace."""
        if self.scope != TokenScope.FLOWS:
            return None
        return frozenset(int(i) for i in self.flow_ids if isinstance(i, int))
