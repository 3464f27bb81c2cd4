"""Reads for publishing and calling flows: a flow's publication, the published flows of a
workspace (the OpenAI-compatible model list), a model name back to its publication."""

from __future__ import annotations

import re

from django.db.models import QuerySet

from accounts.models import Workspace
from accounts.tenancy import scoped
from chat.models import Publication
from flows.models import Flow

# `flow-<id>` names any published flow by its id, whatever its model name (docs/api.md).
FLOW_ID_ALIAS = re.compile(r"^flow-(\d{1,18})$")


def publication_of(flow: Flow) -> Publication | None:
    """The flow's publication (its published version), or None."""
    return (
        scoped(Publication, flow.workspace)
        .filter(flow=flow)
        .select_related("version", "published_by")
        .first()
    )


def published(workspace: Workspace) -> QuerySet[Publication]:
    """The publications of live flows of `workspace`, by model name."""
    return (
        scoped(Publication, workspace)
        .filter(flow__deleted_at__isnull=True, flow__is_scratch=False)
        .select_related("flow", "version")
        .order_by("model_name")
    )


def publication_for_model(workspace: Workspace, model: str) -> Publication | None:
    """The publication a model name (or its `flow-<id>` alias) stands for, or None."""
    found = published(workspace).filter(model_name=model).first()
    if found is None and (alias := FLOW_ID_ALIAS.match(model)):
        found = published(workspace).filter(flow_id=int(alias.group(1))).first()
    return found
