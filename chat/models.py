"""A flow as others call it: the published version (the production pointer) and the model
name under which the OpenAI-compatible endpoint lists it.

Conversations: a thread of turns with one flow, each turn a run (issue 16); embeds: a
published flow as a chat on a website, whose visitors have conversations too."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from accounts.models import Workspace


class Publication(models.Model):
    """A flow's published version: what the one-call run API and the OpenAI-compatible
    endpoint run when the caller names no version. At most one per flow (the row is the
    pointer; publishing another version moves it, rolling back is publishing an older one).

    `model_name` is the flow's id on `/v1/models`: taken from the flow's name when it is
    first published and kept while it stays published, so renaming the flow or moving the
    pointer never breaks a client configured with it.
    """

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    flow = models.OneToOneField("flows.Flow", on_delete=models.CASCADE, related_name="publication")
    # RESTRICT, not PROTECT: deleting the flow or the workspace takes the publication along.
    version = models.ForeignKey("flows.FlowVersion", on_delete=models.RESTRICT, related_name="+")
    model_name = models.CharField(max_length=64)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    published_at = models.DateTimeField()

    class Meta:
        ordering = ["model_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "model_name"], name="publication_unique_model_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_name} -> v{self.version.number}"


class Conversation(models.Model):
    """A thread of turns with one flow; each turn is a run (ConversationTurn), in order.

    Every turn runs in the conversation's own session (`session_id`), and the flow's
    `memory.conversation` nodes key their memory by session: so the conversation's memory
    is its turns so far, stored in the database, whichever worker runs the next turn.
    Deleting a conversation deletes it, its turns' links and its memory; the runs stay.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    flow = models.ForeignKey("flows.Flow", on_delete=models.CASCADE, related_name="+")
    title = models.CharField(max_length=200, blank=True)
    session_id = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    # A conversation of a website visitor through an embed (chat.embeds); the playground's
    # own have neither. SET_NULL: deleting the embed keeps its conversations' record.
    embed = models.ForeignKey(
        "chat.Embed", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    visitor = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at", "-created_at"]
        indexes = [models.Index(fields=["workspace", "flow", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or str(self.pk)


class ConversationTurn(models.Model):
    """Turn `number` (1, 2, ...) of a conversation: one run. Here, not on runs.Run, so runs
    knows nothing of conversations (dependencies point chat -> runs)."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    number = models.PositiveIntegerField()
    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["conversation", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "number"], name="conversation_turn_unique_number"
            )
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id} #{self.number}"


class Embed(models.Model):
    """A published flow on someone's website: a chat bubble (`<script>`) or an iframe.

    `public_id` is the embed token: it is in the website's page source, so it is not a
    secret and is not hashed; all it can do is chat with this flow's published version, as
    a visitor (chat.embeds). The browser enforces `allowed_origins` (the chat page may only
    be framed by them: CSP frame-ancestors) and the embed API refuses requests from other
    origins. Runs are started as the member who created the embed (`created_by`): if they
    are no longer an editor of the workspace, the embed stops answering.
    """

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    flow = models.ForeignKey("flows.Flow", on_delete=models.CASCADE, related_name="+")
    public_id = models.CharField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    allowed_origins = models.JSONField(default=list)
    title = models.CharField(max_length=100)
    welcome_message = models.CharField(max_length=500, blank=True)
    accent_color = models.CharField(max_length=7, default="#2563eb")
    show_sources = models.BooleanField(default=True)
    visitor_runs_per_minute = models.PositiveIntegerField(default=5)
    runs_per_minute = models.PositiveIntegerField(default=60)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"
