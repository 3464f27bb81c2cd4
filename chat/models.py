"""A flow as others call it: the published version (the production pointer) and the model
name under which the OpenAI-compatible endpoint lists it.

Conversations, embeds, keys scoped to flows and usage will live here too (issue 16)."""

from __future__ import annotations

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
