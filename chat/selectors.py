"""Reads for publishing and calling flows: a flow's publication, the published flows of a
workspace (the OpenAI-compatible model list), a model name back to its publication; and
conversations (listed, searched, read with their turns)."""

from __future__ import annotations

import json
import re

from django.db.models import Count, Q, QuerySet

from accounts.models import Workspace
from accounts.tenancy import scoped
from chat.models import Conversation, ConversationTurn, Publication
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


def conversations(
    workspace: Workspace, *, flow_id: int | None = None, text: str = ""
) -> QuerySet[Conversation]:
    """The workspace's conversations (of one flow), latest first, with their turn counts.

    `text` searches, case-insensitively, the titles and what the turns' runs store as
    inputs and outputs (their JSON as text): a plain scan of what is stored, so callers
    bound it (the API caps the text and the page). Website visitors' conversations (through
    an embed) are not among them: they are the visitors', not the team's."""
    found = scoped(Conversation, workspace).filter(visitor="")
    if flow_id is not None:
        found = found.filter(flow_id=flow_id)
    if text:
        in_turns = Q()
        for form in stored_forms(text):
            in_turns |= Q(run__inputs__icontains=form) | Q(run__outputs__icontains=form)
        matching = scoped(ConversationTurn, workspace).filter(in_turns)
        found = found.filter(
            Q(title__icontains=text) | Q(pk__in=matching.values("conversation_id"))
        )
    return (
        found.select_related("created_by")
        .annotate(turn_count=Count("turns"))
        .order_by("-updated_at", "-created_at")
    )


def stored_forms(text: str) -> list[str]:
    """The ways `text` can appear inside a JSON column read as text: as typed, and as a
    JSON string escapes it, with non-ASCII kept (PostgreSQL's jsonb prints it so) or as
    \\uXXXX (Django writes JSON to SQLite with json.dumps' default, so `订单` is stored as
    `\\u8ba2\\u5355` there, and a search for the characters alone would never match)."""
    forms = [text, json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1]]
    return list(dict.fromkeys(forms))


def turns(conversation: Conversation) -> QuerySet[ConversationTurn]:
    """The conversation's turns in order, with their runs."""
    return (
        scoped(ConversationTurn, conversation.workspace)
        .filter(conversation=conversation)
        .select_related("run")
        .order_by("number")
    )
