"""Writes for publishing flows, for calling them from outside (the one-call run API and
the OpenAI-compatible endpoint) and for conversations (threads of such calls)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import ApiToken, Membership, Role, Workspace
from accounts.tenancy import require_role, scoped
from audit.services import record
from chat.models import Conversation, ConversationTurn, Publication
from chat.selectors import FLOW_ID_ALIAS
from flows.builder import GraphInvalid, validate_graph
from flows.components.memory import MAX_MESSAGE_CHARS
from flows.models import ConversationMessage, Flow, FlowVersion
from runs import services as run_services
from runs.models import Run, RunStatus
from runs.services import RunRefused

MEMORY_COMPONENT = "memory.conversation"
HISTORY_ROLES = ("system", "user", "assistant")
MAX_HISTORY_MESSAGES = 500
TITLE_CHARS = 80  # a conversation's default title: its first message, cut here


@transaction.atomic
def flow_publish(
    *, workspace: Workspace, acting: Membership, flow: Flow, version_number: int
) -> Publication:
    """Make version `version_number` the flow's published one (a rollback when it is older
    than the current one). The version must be a saved one (not an editor draft that ran)
    whose graph is valid now; GraphInvalid lists every problem otherwise."""
    require_role(acting, Role.EDITOR)
    # Locks the flow: two publishes of one flow take turns, so the audit's `before` is true.
    flow = scoped(Flow, workspace).select_for_update().get(pk=flow.pk, deleted_at__isnull=True)
    version = scoped(FlowVersion, workspace).filter(flow=flow, number=version_number).first()
    if version is None:
        raise ValidationError({"version": [f"This flow has no version {version_number}."]})
    if version.is_draft:
        raise ValidationError(
            {
                "version": [
                    f"v{version.number} is an editor draft that was run, not a saved version: "
                    "save the graph as a version, then publish that."
                ]
            }
        )
    problems = validate_graph(version.graph, workspace)
    if problems:
        raise GraphInvalid(problems)
    current = scoped(Publication, workspace).filter(flow=flow).select_related("version").first()
    before = {"version": current.version.number} if current else None
    now = timezone.now()
    if current is None:
        current = Publication.objects.create(
            workspace=workspace,
            flow=flow,
            version=version,
            model_name=_free_model_name(workspace, flow),
            published_by=acting.user,
            published_at=now,
        )
    else:
        current.version = version
        current.published_by = acting.user
        current.published_at = now
        current.save(update_fields=["version", "published_by", "published_at"])
    record(
        action="flow.publish",
        workspace=workspace,
        actor=acting.user,
        target=f"flow:{flow.pk}",
        before=before,
        after={
            "version": version.number,
            "model": current.model_name,
            "rollback": bool(before and before["version"] > version.number),
        },
    )
    return current


@transaction.atomic
def flow_unpublish(*, workspace: Workspace, acting: Membership, flow: Flow) -> None:
    """Take the flow's published version down; nothing to do if it has none."""
    require_role(acting, Role.EDITOR)
    current = scoped(Publication, workspace).filter(flow=flow).select_related("version").first()
    if current is None:
        return
    record(
        action="flow.unpublish",
        workspace=workspace,
        actor=acting.user,
        target=f"flow:{flow.pk}",
        before={"version": current.version.number, "model": current.model_name},
    )
    current.delete()


def _free_model_name(workspace: Workspace, flow: Flow) -> str:
    """A readable model name from the flow's name, unique in the workspace; `flow-<id>`
    forms are the id aliases, so a name of that shape is only ever the flow's own."""
    base = slugify(flow.name)[:50].strip("-") or "flow"
    if FLOW_ID_ALIAS.match(base):
        base = f"flow-{flow.pk}"
    taken = set(
        scoped(Publication, workspace)
        .filter(model_name__startswith=base)
        .values_list("model_name", flat=True)
    )
    name = base if base not in taken else f"{base}-{flow.pk}"
    suffix = 2
    while name in taken:  # only when another flow's name ends in this one's id
        name = f"{base}-{flow.pk}-{suffix}"
        suffix += 1
    return name


# --- calling a flow from outside ----------------------------------------------------------
@dataclass(frozen=True)
class HistoryMessage:
    """An earlier message of a chat (OpenAI `messages` before the last user one)."""

    role: str
    content: str


class NotPublished(RunRefused):
    """The caller named no version and the flow has none published (409)."""


def called_version(workspace: Workspace, flow: Flow, version_number: int | None) -> int:
    """The version a call from outside runs: the one it names, else the published one."""
    if version_number is not None:
        return version_number
    publication = scoped(Publication, workspace).filter(flow=flow).select_related("version")
    current = publication.first()
    if current is None:
        raise NotPublished(
            "not_published",
            "This flow has no published version: publish one (versions page or "
            "POST .../publish), or name a version to run.",
        )
    return current.version.number


@transaction.atomic
def flow_call(
    *,
    workspace: Workspace,
    acting: Membership,
    flow: Flow,
    version_number: int | None,
    inputs: object,
    history: Sequence[HistoryMessage] = (),
    conversation_id: str | None = None,
    api_token: ApiToken | None = None,
    rate: tuple[str, int] | None = None,
) -> Run:
    """Start a run of a flow called from outside: the version it names or the published
    one, in a session of its own, or as the next turn of conversation `conversation_id`.

    `history` (earlier chat messages) is put in that session's conversation memory before
    the run starts, for each `memory.conversation` node of the graph, so a flow with memory
    sees the chat so far (a flow without memory ignores it). A conversation's turns share
    its session, so its memory already holds the turns before (history is refused with it).
    `rate`: the per-minute counter the run counts against instead of the member's own
    (runs.services.run_start).
    """
    if len(history) > MAX_HISTORY_MESSAGES:
        raise RunRefused(
            "invalid_request", f"At most {MAX_HISTORY_MESSAGES} earlier messages are taken."
        )
    conversation = None
    if conversation_id is not None:
        if history:
            raise RunRefused(
                "invalid_request", "A conversation holds its own history: send one or the other."
            )
        conversation = _conversation_for_turn(workspace, flow, conversation_id)
    number = called_version(workspace, flow, version_number)
    run = run_services.run_start(
        workspace=workspace,
        acting=acting,
        session_id=conversation.session_id if conversation else run_services.new_session_id(),
        flow=flow,
        version_number=number,
        inputs=inputs,
        api_token=api_token,
        rate=rate,
    )
    if conversation is not None:
        _add_turn(conversation, run)
    _seed_history(workspace, run, history)
    return run


@transaction.atomic
def conversation_turn_start(
    *,
    workspace: Workspace,
    acting: Membership,
    flow: Flow,
    version_number: int | None,
    inputs: object,
    conversation_id: str,
) -> Run:
    """Start the next turn of a conversation from the playground: a run of the version it
    names, else the newest saved one (what the editor runs, published or not), in the
    conversation's session so its memory holds the turns before."""
    conversation = _conversation_for_turn(workspace, flow, conversation_id)
    run = run_services.run_start(
        workspace=workspace,
        acting=acting,
        session_id=conversation.session_id,
        flow=flow,
        version_number=version_number,
        inputs=inputs,
    )
    _add_turn(conversation, run)
    return run


def _conversation_for_turn(workspace: Workspace, flow: Flow, conversation_id: str) -> Conversation:
    """The conversation, locked so two turns of it take turns; another flow's or another
    workspace's is missing (404), and one whose last turn has not ended is busy (409)."""
    try:
        conversation = (
            scoped(Conversation, workspace).select_for_update().get(pk=conversation_id, flow=flow)
        )
    except (Conversation.DoesNotExist, ValidationError, ValueError) as exc:
        raise RunRefused("not_found", "No such conversation with this flow.") from exc
    active = scoped(ConversationTurn, workspace).filter(
        conversation=conversation,
        run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING],
    )
    if active.exists():
        raise RunRefused(
            "conversation_busy",
            "This conversation's last turn has not finished yet: wait for it (or cancel it).",
        )
    return conversation


def _add_turn(conversation: Conversation, run: Run) -> None:
    last = conversation.turns.order_by("-number").values_list("number", flat=True).first()
    ConversationTurn.objects.create(
        workspace_id=conversation.workspace_id,
        conversation=conversation,
        number=(last or 0) + 1,
        run=run,
    )
    if not conversation.title:
        conversation.title = default_title(run.inputs)
    conversation.save(update_fields=["title", "updated_at"])


def default_title(inputs: object) -> str:
    """The first message of a conversation, on one line and cut: its default title."""
    values = inputs.values() if isinstance(inputs, dict) else [inputs]
    text = next((v for v in values if isinstance(v, str) and v.strip()), "")
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def _seed_history(workspace: Workspace, run: Run, history: Sequence[HistoryMessage]) -> None:
    """Written before the run's task is sent (run_start dispatches on commit)."""
    if not history:
        return
    names = {
        str((node.get("params") or {}).get("conversation") or "default")
        for node in run.flow_version.graph.get("nodes", [])
        if isinstance(node, dict) and node.get("component") == MEMORY_COMPONENT
    }
    rows = [
        ConversationMessage(
            workspace=workspace,
            session_id=run.session_id,
            conversation=name,
            role=message.role,
            content=message.content[:MAX_MESSAGE_CHARS],
        )
        for name in sorted(n for n in names if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", n))
        for message in history
    ]
    ConversationMessage.objects.bulk_create(rows)


# --- conversations ------------------------------------------------------------------------
@transaction.atomic
def conversation_create(
    *, workspace: Workspace, acting: Membership, flow: Flow, title: str = ""
) -> Conversation:
    """A new, empty conversation with `flow` (its first turn titles it unless `title`).
    Not audited itself: each of its turns is a run, and starting a run is."""
    require_role(acting, Role.EDITOR)
    return Conversation.objects.create(
        workspace=workspace,
        flow=flow,
        title=_clean_title(title) if title else "",
        session_id=f"conv-{run_services.new_session_id()}",
        created_by=acting.user,
    )


@transaction.atomic
def conversation_rename(
    *, workspace: Workspace, acting: Membership, conversation: Conversation, title: str
) -> Conversation:
    require_role(acting, Role.EDITOR)
    conversation = scoped(Conversation, workspace).select_for_update().get(pk=conversation.pk)
    before = conversation.title
    conversation.title = _clean_title(title)
    conversation.save(update_fields=["title", "updated_at"])
    record(
        action="conversation.rename",
        workspace=workspace,
        actor=acting.user,
        target=f"conversation:{conversation.pk}",
        before={"title": before},
        after={"title": conversation.title},
    )
    return conversation


@transaction.atomic
def conversation_delete(
    *, workspace: Workspace, acting: Membership, conversation: Conversation
) -> None:
    """Delete the conversation, its turns' links and its memory; the runs stay (they are
    the workspace's record of what ran)."""
    require_role(acting, Role.EDITOR)
    conversation = scoped(Conversation, workspace).select_for_update().get(pk=conversation.pk)
    record(
        action="conversation.delete",
        workspace=workspace,
        actor=acting.user,
        target=f"conversation:{conversation.pk}",
        before={
            "title": conversation.title,
            "flow": conversation.flow_id,
            "turns": conversation.turns.count(),
        },
    )
    scoped(ConversationMessage, workspace).filter(session_id=conversation.session_id).delete()
    conversation.delete()


def _clean_title(title: str) -> str:
    line = " ".join(title.split())
    if not line:
        raise ValidationError({"title": ["A title cannot be empty."]})
    if len(line) > 200:
        raise ValidationError({"title": ["A title is at most 200 characters."]})
    return line
