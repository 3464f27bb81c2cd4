"""Flows and their immutable versions, credentials, the component whitelist, and the data
that components read (conversation memory; documents are knowledge bases now: knowledge/)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Workspace


class Flow(models.Model):
    """A named flow of a workspace; its graph lives in numbered, immutable versions."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="flows"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=5000)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Runs of unsaved editor drafts that belong to no flow are kept under a per-user scratch flow.
    is_scratch = models.BooleanField(default=False)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at", "-pk"]
        indexes = [models.Index(fields=["workspace", "-updated_at"])]

    def __str__(self) -> str:
        return self.name


class FlowVersionImmutable(Exception):
    """A saved flow version is never edited in place: save a new version instead."""


class FlowVersionQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise FlowVersionImmutable("Flow versions are immutable.")


class FlowVersion(models.Model):
    """One immutable snapshot of a flow's graph. Runs point at the exact version they ran."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    graph = models.JSONField()
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the canonical graph JSON.")
    note = models.CharField(max_length=500, blank=True)
    is_draft = models.BooleanField(default=False, help_text="An unsaved editor draft that ran.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FlowVersionQuerySet.as_manager()

    class Meta:
        ordering = ["flow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["flow", "number"], name="flowversion_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.flow} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise FlowVersionImmutable("Flow versions are immutable.")
        super().save(*args, **kwargs)


class FlowDraft(models.Model):
    """A flow's working draft: the editor's canvas as it is, saved every few seconds.

    One per flow, shared by its editors. It is only checked for size and storability, never
    validated (work in progress may be incomplete); running, publishing or saving a named
    version is what needs a valid graph. `revision` counts the saves: a save names the
    revision it started from, and a save over another editor's newer one is refused (409).
    """

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    flow = models.OneToOneField(Flow, on_delete=models.CASCADE, related_name="draft")
    graph = models.JSONField()
    revision = models.PositiveIntegerField(default=1)
    # The version the editor had loaded when this draft began (None: the flow had none).
    base_version = models.PositiveIntegerField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"draft of {self.flow} (revision {self.revision})"


class Provider(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible"
    ANTHROPIC = "anthropic", "Anthropic"
    OLLAMA = "ollama", "Ollama"


class Credential(models.Model):
    """A provider connection of a workspace. The API key is Fernet-encrypted at rest and
    write-only over every API; it is decrypted only in memory when a node is built."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="credentials"
    )
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.OPENAI)
    base_url = models.URLField(max_length=500, blank=True)
    api_key_encrypted = models.TextField(blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="credential_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)


class ComponentPolicy(models.Model):
    """Platform-wide: whether component `key` may be used at all (platform staff decide).

    No row means the component's own default (`Component.default_enabled`)."""

    key = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )

    class Meta:
        ordering = ["key"]
        verbose_name_plural = "component policies"

    def __str__(self) -> str:
        return f"{self.key}: {'enabled' if self.enabled else 'disabled'}"


class WorkspaceComponentPolicy(models.Model):
    """A workspace's narrowing of the platform policy: a row disables `key` there.

    It can only take away: a component disabled by the platform stays disabled."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="component_policies"
    )
    key = models.CharField(max_length=100)
    enabled = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "key"], name="wspolicy_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.workspace}: {self.key} {'enabled' if self.enabled else 'disabled'}"


class PolicyChange(models.Model):
    """One change of a whitelist (who, when, before, after); the audit trail records it too,
    this history is what the admin shows beside the policy."""

    key = models.CharField(max_length=100)
    before = models.JSONField(null=True)
    after = models.JSONField(null=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["-changed_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.key}: {self.before} -> {self.after}"


class ComponentPolicyChange(PolicyChange):
    """History of platform-wide whitelist changes."""

    class Meta(PolicyChange.Meta):
        pass


class WorkspaceComponentPolicyChange(PolicyChange):
    """History of a workspace's whitelist narrowing."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )

    class Meta(PolicyChange.Meta):
        pass

    def __str__(self) -> str:
        return f"{self.workspace}: {super().__str__()}"


class ConversationMessage(models.Model):
    """One message of a conversation, per workspace and run session (memory.conversation)."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    session_id = models.CharField(max_length=64)
    conversation = models.CharField(max_length=64, default="default")
    role = models.CharField(max_length=16)
    content = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["workspace", "session_id", "conversation", "created_at"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
