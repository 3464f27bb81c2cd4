"""Publishing API (a flow's published version) and conversations (threads of turns with a
flow: listed, searched, read, renamed, deleted; a turn starts through the one-call run API
with `conversation_id`). The one-call run API and the OpenAI-compatible endpoint are
streaming views (chat/calls.py, chat/openai_compat.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status

from accounts.api_auth import DbInt, WorkspaceSlug, context, for_flow_keys, minimum_role
from accounts.models import Role
from chat import selectors, services
from chat.access import access_conversation
from chat.models import Conversation, Publication
from flows.access import access_flow
from flows.api import InvalidGraphOut
from flows.builder import GraphInvalid

router = Router(tags=["publishing and conversations"])


class PublishIn(Schema):
    version: int = Field(..., ge=1, le=2**31 - 1, description="The version to publish.")


class PublicationOut(Schema):
    """The flow's published version (null: none), and its model name on `/v1/models`."""

    flow: int
    version: int | None
    model: str | None
    published_by: str | None
    published_at: datetime | None


def _publication_out(flow_id: int, publication: Publication | None) -> dict[str, Any]:
    if publication is None:
        return {
            "flow": flow_id,
            "version": None,
            "model": None,
            "published_by": None,
            "published_at": None,
        }
    return {
        "flow": flow_id,
        "version": publication.version.number,
        "model": publication.model_name,
        "published_by": publication.published_by.email if publication.published_by else None,
        "published_at": publication.published_at,
    }


@router.get("flows/{flow_id}/publication", response=PublicationOut)
@minimum_role(Role.VIEWER)
def publication_get(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    return _publication_out(flow.pk, selectors.publication_of(flow))


@router.post(
    "flows/{flow_id}/publication",
    response={200: PublicationOut, 400: InvalidGraphOut},
    summary="Publish a version (an older one: a rollback)",
)
@minimum_role(Role.EDITOR)  # editors save and run versions; publishing one is theirs too
def publication_set(
    request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, payload: PublishIn
) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    try:
        publication = services.flow_publish(
            workspace=context(request).workspace,
            acting=context(request).membership,
            flow=flow,
            version_number=payload.version,
        )
    except GraphInvalid as exc:
        return Status(
            400,
            {"detail": "This version's graph is not valid now.", "problems": exc.problems},
        )
    return _publication_out(flow.pk, publication)


@router.delete("flows/{flow_id}/publication", response={204: None}, summary="Unpublish")
@minimum_role(Role.EDITOR)
def publication_delete(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    services.flow_unpublish(
        workspace=context(request).workspace, acting=context(request).membership, flow=flow
    )
    return Status(204, None)


# --- conversations ------------------------------------------------------------------------
MAX_SEARCH_CHARS = 200


class ConversationsQuery(Schema):
    q: str = Field("", max_length=MAX_SEARCH_CHARS, description="Text in titles or turns.")
    limit: int = Field(50, ge=1, le=200)


class WorkspaceConversationsQuery(ConversationsQuery):
    flow: int | None = Field(None, ge=1, le=2**63 - 1, description="Only this flow's.")


class ConversationIn(Schema):
    title: str = Field("", max_length=200, description="Empty: the first message, cut.")


class RenameIn(Schema):
    title: str = Field(..., min_length=1, max_length=200)


class ConversationOut(Schema):
    id: str
    flow: int
    title: str
    turns: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class TurnOut(Schema):
    """One turn: its run, what went in and what came out (`answer`: the run's only text
    output, when it has exactly one)."""

    number: int
    run_id: str
    status: str
    inputs: Any
    outputs: Any
    answer: str | None
    error: str
    created_at: datetime


class ConversationDetailOut(ConversationOut):
    turn_list: list[TurnOut]


def _conversation_out(conversation: Conversation, turn_count: int) -> dict[str, Any]:
    return {
        "id": str(conversation.pk),
        "flow": conversation.flow_id,
        "title": conversation.title,
        "turns": turn_count,
        "created_by": conversation.created_by.email if conversation.created_by else None,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
    }


def _answer(outputs: Any) -> str | None:
    if isinstance(outputs, dict) and len(outputs) == 1:
        (value,) = outputs.values()
        return value if isinstance(value, str) else None
    return None


def _listed(request: HttpRequest, flow_id: int | None, q: ConversationsQuery) -> list[Any]:
    found = selectors.conversations(context(request).workspace, flow_id=flow_id, text=q.q)
    if (scope := context(request).membership.flow_scope) is not None:
        found = found.filter(flow_id__in=scope)
    # turn_count: annotated by the selector (its type is not known to the model).
    return [_conversation_out(c, cast(Any, c).turn_count) for c in found[: q.limit]]


@router.get("conversations", response=list[ConversationOut])
@minimum_role(Role.VIEWER)
@for_flow_keys  # a key scoped to named flows lists their conversations
def conversation_list(
    request: HttpRequest, slug: WorkspaceSlug, q: Query[WorkspaceConversationsQuery]
) -> Any:
    return _listed(request, q.flow, q)


@router.get("flows/{flow_id}/conversations", response=list[ConversationOut])
@minimum_role(Role.VIEWER)
def flow_conversation_list(
    request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, q: Query[ConversationsQuery]
) -> Any:
    flow = access_flow(context(request).membership, flow_id, include_deleted=True)
    return _listed(request, flow.pk, q)


@router.post(
    "flows/{flow_id}/conversations",
    response={201: ConversationOut},
    summary="Start a conversation (its turns: POST flows/<id>/run with conversation_id)",
)
@minimum_role(Role.EDITOR)  # its turns are runs
def conversation_create(
    request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, payload: ConversationIn
) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    conversation = services.conversation_create(
        workspace=context(request).workspace,
        acting=context(request).membership,
        flow=flow,
        title=payload.title,
    )
    return Status(201, _conversation_out(conversation, 0))


@router.get("conversations/{conversation_id}", response=ConversationDetailOut)
@minimum_role(Role.VIEWER)
def conversation_get(request: HttpRequest, slug: WorkspaceSlug, conversation_id: str) -> Any:
    conversation = access_conversation(context(request).membership, conversation_id)
    turn_list = [
        {
            "number": turn.number,
            "run_id": str(turn.run.pk),
            "status": turn.run.status,
            "inputs": turn.run.inputs,
            "outputs": turn.run.outputs,
            "answer": _answer(turn.run.outputs),
            "error": turn.run.error,
            "created_at": turn.run.created_at,
        }
        for turn in selectors.turns(conversation)
    ]
    return {**_conversation_out(conversation, len(turn_list)), "turn_list": turn_list}


@router.patch("conversations/{conversation_id}", response=ConversationOut, summary="Rename")
@minimum_role(Role.EDITOR)
def conversation_rename(
    request: HttpRequest, slug: WorkspaceSlug, conversation_id: str, payload: RenameIn
) -> Any:
    conversation = access_conversation(context(request).membership, conversation_id)
    conversation = services.conversation_rename(
        workspace=context(request).workspace,
        acting=context(request).membership,
        conversation=conversation,
        title=payload.title,
    )
    return _conversation_out(conversation, conversation.turns.count())


@router.delete("conversations/{conversation_id}", response={204: None})
@minimum_role(Role.EDITOR)
def conversation_delete(request: HttpRequest, slug: WorkspaceSlug, conversation_id: str) -> Any:
    conversation = access_conversation(context(request).membership, conversation_id)
    services.conversation_delete(
        workspace=context(request).workspace,
        acting=context(request).membership,
        conversation=conversation,
    )
    return Status(204, None)
