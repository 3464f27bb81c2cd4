"""Embeds: a published flow as a chat on someone's website (issue 16, item 7).

An embed belongs to a workspace and a flow. Its `public_id` (the embed token) goes into the
website's page, in a `<script>` tag that draws a chat bubble or in an `<iframe>`; either way
the chat itself is Flowdeck's page `/embed/<public_id>/` (chat/embed_views.py), so the
website's own scripts never see the conversation, and the browser lets only the embed's
allowed origins frame it (CSP frame-ancestors). What the token can do is narrow: start a
visitor's turn with the flow's *published* version, read that visitor's conversations, and
follow or stop that visitor's runs, as a filtered stream (`visitor_event`): the answer's
tokens, its sources, its end. Nothing else of the workspace is reachable with it.

Visitors are anonymous. The first request of a browser gets a signed visitor token
(`visitor_token`), kept by the chat page in its storage; each conversation belongs to one
visitor of one embed. Limits: runs per minute per visitor and per embed (counted where the
cache lives, like every rate limit), new visitors per minute per client address, and the
workspace's budget and concurrency limits as for every run.

Runs start as the member who made the embed: they must still be an editor of the workspace
(else the embed answers `embed_unavailable`), and the run's log and audit name them.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Membership, Role, Workspace
from accounts.tenancy import require_role, scoped
from audit.services import record
from chat import services
from chat.graphs import AnswerSource, answer_sources, answer_text, chat_inputs
from chat.models import Conversation, ConversationTurn, Embed, Publication
from config.counters import count_up
from flows.models import Flow
from runs import services as run_services
from runs.models import Run, RunStatus
from runs.services import RunRefused

MAX_ORIGINS = 20
MAX_MESSAGE_CHARS = 4000
NEW_VISITORS_PER_MINUTE_PER_ADDRESS = 30
VISITOR_SALT = "flowdeck.embed.visitor"
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
HOST = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)


class EmbedRefused(Exception):
    """A visitor's request refused: a stable code, a sentence, the HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# --- settings ------------------------------------------------------------------------------
def clean_origin(raw: str) -> str:
    """`raw` as a web origin (`https://shop.example.com`, `http://localhost:3000`): scheme
    and host lower-cased, the default port dropped; anything else is a ValidationError."""
    text = raw.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"“{text[:100]}” is not an origin.") from exc
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise ValidationError(
            f"“{text[:100]}” is not an origin: write the scheme and host, such as "
            "https://www.example.com."
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValidationError(
            f"“{text[:100]}” has more than an origin: leave out the path, query and user."
        )
    if "*" in host or not (HOST.match(host) or _is_ip(host)):
        raise ValidationError(f"“{text[:100]}”: the host is not valid (no wildcards).")
    default = {"http": 80, "https": 443}[scheme]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + (f":{port}" if port and port != default else "")


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def clean_origins(raw: object) -> list[str]:
    """A list of distinct origins from a list or from text (one per line, or commas)."""
    items = re.split(r"[\s,]+", raw) if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise ValidationError({"allowed_origins": ["A list of origins is expected."]})
    origins: list[str] = []
    problems: list[str] = []
    for item in items:
        if not isinstance(item, str):
            problems.append("Each origin is text.")
            continue
        if not item.strip():
            continue
        try:
            origin = clean_origin(item)
        except ValidationError as exc:
            problems.extend(exc.messages)
            continue
        if origin not in origins:
            origins.append(origin)
    if problems:
        raise ValidationError({"allowed_origins": problems})
    if not origins:
        raise ValidationError(
            {"allowed_origins": ["Name at least one website origin allowed to show the chat."]}
        )
    if len(origins) > MAX_ORIGINS:
        raise ValidationError({"allowed_origins": [f"At most {MAX_ORIGINS} origins."]})
    return origins


@dataclass(frozen=True)
class EmbedSettings:
    """What an editor sets on an embed (validated by `clean`)."""

    name: str
    allowed_origins: list[str]
    title: str = ""
    welcome_message: str = ""
    accent_color: str = "#2563eb"
    show_sources: bool = True
    visitor_runs_per_minute: int = 5
    runs_per_minute: int = 60
    enabled: bool = True

    def clean(self, flow: Flow) -> dict[str, Any]:
        problems: dict[str, list[str]] = {}
        name = " ".join(self.name.split())
        if not name or len(name) > 100:
            problems["name"] = ["A name of 1 to 100 characters."]
        title = " ".join(self.title.split()) or flow.name[:100]
        if len(title) > 100:
            problems["title"] = ["A title is at most 100 characters."]
        welcome = self.welcome_message.strip()
        if len(welcome) > 500:
            problems["welcome_message"] = ["A welcome message is at most 500 characters."]
        if not COLOR.match(self.accent_color or ""):
            problems["accent_color"] = ["A colour as #rrggbb."]
        if not 1 <= self.visitor_runs_per_minute <= 600:
            problems["visitor_runs_per_minute"] = ["Between 1 and 600 messages a minute."]
        if not 1 <= self.runs_per_minute <= 10_000:
            problems["runs_per_minute"] = ["Between 1 and 10,000 messages a minute."]
        try:
            origins = clean_origins(self.allowed_origins)
        except ValidationError as exc:
            problems.update(exc.message_dict)
            origins = []
        if problems:
            raise ValidationError(problems)
        return {
            "name": name,
            "allowed_origins": origins,
            "title": title,
            "welcome_message": welcome,
            "accent_color": self.accent_color.lower(),
            "show_sources": bool(self.show_sources),
            "visitor_runs_per_minute": self.visitor_runs_per_minute,
            "runs_per_minute": self.runs_per_minute,
            "enabled": bool(self.enabled),
        }


def _audited(embed: Embed) -> dict[str, Any]:
    return {
        "flow": embed.flow_id,
        "name": embed.name,
        "allowed_origins": embed.allowed_origins,
        "visitor_runs_per_minute": embed.visitor_runs_per_minute,
        "runs_per_minute": embed.runs_per_minute,
        "enabled": embed.enabled,
    }


@transaction.atomic
def embed_create(
    *, workspace: Workspace, acting: Membership, flow: Flow, settings: EmbedSettings
) -> Embed:
    """A new embed of `flow`; its runs will start as `acting`."""
    require_role(acting, Role.EDITOR)
    embed = Embed.objects.create(
        workspace=workspace,
        flow=flow,
        public_id=f"emb_{secrets.token_urlsafe(18)}",
        created_by=acting.user,
        **settings.clean(flow),
    )
    record(
        action="embed.create",
        workspace=workspace,
        actor=acting.user,
        target=f"embed:{embed.pk}",
        after=_audited(embed),
    )
    return embed


@transaction.atomic
def embed_update(
    *, workspace: Workspace, acting: Membership, embed: Embed, settings: EmbedSettings
) -> Embed:
    require_role(acting, Role.EDITOR)
    embed = scoped(Embed, workspace).select_for_update().get(pk=embed.pk)
    before = _audited(embed)
    for field, value in settings.clean(embed.flow).items():
        setattr(embed, field, value)
    embed.save()
    record(
        action="embed.update",
        workspace=workspace,
        actor=acting.user,
        target=f"embed:{embed.pk}",
        before=before,
        after=_audited(embed),
    )
    return embed


@transaction.atomic
def embed_delete(*, workspace: Workspace, acting: Membership, embed: Embed) -> None:
    require_role(acting, Role.EDITOR)
    embed = scoped(Embed, workspace).select_for_update().get(pk=embed.pk)
    record(
        action="embed.delete",
        workspace=workspace,
        actor=acting.user,
        target=f"embed:{embed.pk}",
        before=_audited(embed),
    )
    embed.delete()


def embeds_of(workspace: Workspace, flow: Flow) -> QuerySet[Embed]:
    return scoped(Embed, workspace).filter(flow=flow).select_related("created_by")


# --- the visitor's side ---------------------------------------------------------------------
def embed_for_visitors(public_id: str) -> Embed:
    """The enabled embed with this token, whatever workspace it is in (the token is the
    whole credential), or EmbedRefused 404 (unknown, deleted and disabled look alike)."""
    embed = (
        Embed.objects.select_related("workspace", "flow")
        .filter(public_id=public_id[:40], enabled=True, flow__deleted_at__isnull=True)
        .first()
    )
    if embed is None:
        raise EmbedRefused(404, "not_found", "This chat is not available.")
    return embed


def origin_allowed(embed: Embed, origin: str | None, own_origin: str) -> bool:
    """Whether a request with this `Origin` header may use the embed's API: none (a
    same-origin GET), the deployment's own (the chat page), or an allowed website."""
    if not origin:
        return True
    try:
        cleaned = clean_origin(origin)
    except ValidationError:
        return False
    return cleaned == own_origin or cleaned in embed.allowed_origins


def visitor_token(embed: Embed, client: str) -> str:
    """A new visitor of `embed`: its signed token (no row: the token is the identity).
    At most NEW_VISITORS_PER_MINUTE_PER_ADDRESS per client address a minute."""
    minute = int(timezone.now().timestamp() // 60)
    [count] = count_up([f"embedvisitors:{embed.pk}:{client}:{minute}"])
    if count > NEW_VISITORS_PER_MINUTE_PER_ADDRESS:
        raise EmbedRefused(429, "rate_limited", "Too many new chats from here; try again soon.")
    return signing.dumps({"e": embed.pk, "v": uuid.uuid4().hex}, salt=VISITOR_SALT, compress=True)


def visitor_of(embed: Embed, token: str | None) -> str:
    """The visitor id a token of this embed names, or EmbedRefused 401."""
    try:
        data = signing.loads(token or "", salt=VISITOR_SALT)
    except signing.BadSignature as exc:
        raise EmbedRefused(401, "visitor_required", "Start a chat first.") from exc
    if not isinstance(data, dict) or data.get("e") != embed.pk or not data.get("v"):
        raise EmbedRefused(401, "visitor_required", "Start a chat first.")
    return str(data["v"])[:64]


def visitor_conversations(embed: Embed, visitor: str) -> QuerySet[Conversation]:
    return scoped(Conversation, embed.workspace).filter(embed=embed, visitor=visitor)


def visitor_conversation(embed: Embed, visitor: str, conversation_id: str) -> Conversation:
    try:
        return visitor_conversations(embed, visitor).get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValidationError, ValueError) as exc:
        raise EmbedRefused(404, "not_found", "No such conversation.") from exc


def visitor_run(embed: Embed, visitor: str, run_id: str) -> Run:
    """A run that is a turn of one of this visitor's conversations of this embed."""
    turn = (
        scoped(ConversationTurn, embed.workspace)
        .filter(conversation__embed=embed, conversation__visitor=visitor, run_id=run_id)
        .select_related("run")
        .first()
        if _is_uuid(run_id)
        else None
    )
    if turn is None:
        raise EmbedRefused(404, "not_found", "No such answer.")
    return turn.run


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _owner(embed: Embed) -> Membership:
    membership = (
        Membership.objects.select_related("workspace", "user")
        .filter(workspace=embed.workspace, user=embed.created_by, user__is_active=True)
        .first()
    )
    if membership is None or not membership.has_role(Role.EDITOR):
        raise EmbedRefused(
            503,
            "embed_unavailable",
            "This chat is not available right now.",
        )
    return membership


def _publication(embed: Embed) -> Publication:
    publication = (
        scoped(Publication, embed.workspace)
        .filter(flow=embed.flow)
        .select_related("version")
        .first()
    )
    if publication is None:
        raise EmbedRefused(503, "not_published", "This chat is not available right now.")
    return publication


@dataclass(frozen=True)
class VisitorTurn:
    conversation: Conversation
    run: Run


@transaction.atomic
def visitor_turn(
    *, embed: Embed, visitor: str, message: str, conversation_id: str | None
) -> VisitorTurn:
    """Start the visitor's next message as a run of the flow's published version: in the
    conversation named (theirs), or in a new one."""
    text = message.strip()
    if not text:
        raise EmbedRefused(400, "invalid_message", "Write a message.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise EmbedRefused(
            400, "invalid_message", f"A message is at most {MAX_MESSAGE_CHARS:,} characters."
        )
    workspace = embed.workspace
    acting = _owner(embed)
    publication = _publication(embed)
    inputs = chat_inputs(publication.version.graph)
    if len(inputs) != 1:
        raise EmbedRefused(503, "unsupported_flow", "This chat is not available right now.")
    minute = int(timezone.now().timestamp() // 60)
    [visitor_count] = count_up([f"embedrate:v:{embed.pk}:{visitor}:{minute}"])
    if visitor_count > embed.visitor_runs_per_minute:
        raise EmbedRefused(429, "rate_limited", "You are sending messages too fast; wait a moment.")
    if conversation_id:
        conversation = visitor_conversation(embed, visitor, conversation_id)
    else:
        conversation = Conversation.objects.create(
            workspace=workspace,
            flow=embed.flow,
            session_id=f"conv-{run_services.new_session_id()}",
            embed=embed,
            visitor=visitor,
        )
    try:
        run = services.flow_call(
            workspace=workspace,
            acting=acting,
            flow=embed.flow,
            version_number=publication.version.number,
            inputs={inputs[0]: text},
            conversation_id=str(conversation.pk),
            rate=(f"embed:{embed.pk}", embed.runs_per_minute),
        )
    except RunRefused as exc:
        raise _refusal(exc) from exc
    return VisitorTurn(conversation, run)


def _refusal(exc: RunRefused) -> EmbedRefused:
    if exc.code == "conversation_busy":
        return EmbedRefused(409, exc.code, "Wait for the answer before sending the next message.")
    if exc.code in ("rate_limited", "too_many_runs"):
        return EmbedRefused(429, "rate_limited", "This chat is busy; try again in a minute.")
    if exc.code == "budget_exceeded":
        return EmbedRefused(429, exc.code, "This chat has reached its usage limit for now.")
    return EmbedRefused(503, "embed_unavailable", "This chat is not available right now.")


@transaction.atomic
def visitor_stop(*, embed: Embed, visitor: str, run_id: str) -> None:
    """Stop the visitor's answer in progress (a finished one stays as it is)."""
    run = visitor_run(embed, visitor, run_id)
    if run.status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING):
        run_services.run_cancel(workspace=embed.workspace, acting=_owner(embed), run=run)


# --- what a visitor sees of a run -----------------------------------------------------------
def visitor_history(embed: Embed, conversation: Conversation) -> list[dict[str, Any]]:
    """The conversation's turns as the chat shows them: question, answer, state."""
    rows = (
        scoped(ConversationTurn, embed.workspace)
        .filter(conversation=conversation)
        .select_related("run", "run__flow_version")
        .order_by("number")
    )
    turns = []
    for turn in rows:
        run = turn.run
        finished = run.is_finished
        sources = answer_sources(run.flow_version.graph)
        turns.append(
            {
                "run_id": str(run.pk),
                "question": next(iter(run.inputs.values()), "") if run.inputs else "",
                "answer": answer_text(sources, run.outputs or {}) if finished else "",
                "status": _visitor_status(run.status),
                "error": _visitor_error(run) if run.status == RunStatus.FAILED else None,
            }
        )
    return turns


def _visitor_status(status: str) -> str:
    return {
        RunStatus.SUCCEEDED: "success",
        RunStatus.FAILED: "error",
        RunStatus.CANCELLED: "cancelled",
    }.get(status, "running")  # type: ignore[call-overload]


def _visitor_error(run: Run) -> str:
    if run.error.startswith("budget_exceeded"):
        return "This chat has reached its usage limit for now."
    return "Sorry, the assistant could not answer this time."


def answer_nodes(run: Run) -> tuple[list[AnswerSource], set[str]]:
    sources = answer_sources(run.flow_version.graph)
    return sources, {s.feeder for s in sources if s.feeder}


def visitor_event(
    message: dict[str, Any], feeders: set[str], show_sources: bool
) -> dict[str, Any] | None:
    """The part of a run event a website visitor sees, or None: the answer's tokens (with
    the node streaming them, so the chat keeps to one), its sources (titles, pages and
    excerpts only) and the end. Everything else of the run (inputs and outputs of other
    nodes, tool calls, prompts, error details) stays inside the workspace."""
    kind, seq = message.get("event"), message.get("seq")
    if kind == "on_token" and message.get("node_id") in feeders:
        text = message.get("data")
        if isinstance(text, str) and text:
            return {"event": "token", "seq": seq, "node": message["node_id"], "text": text}
    elif kind == "on_retrieval" and show_sources:
        raw = message.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        hits = [
            {
                "title": str(hit.get("document") or hit.get("title") or "")[:200],
                "page": hit.get("page") if isinstance(hit.get("page"), int) else None,
                "excerpt": str(hit.get("excerpt") or "")[:500],
            }
            for hit in (data.get("hits") or [])[:10]
            if isinstance(hit, dict)
        ]
        if hits:
            return {"event": "sources", "seq": seq, "hits": hits}
    elif kind == "completed":
        return {"event": "done", "seq": seq, "status": message.get("status")}
    return None


def visitor_ending(run: Run) -> dict[str, Any]:
    """What the chat needs at a run's end: the answer from the run's outputs (a flow whose
    answer was not streamed has it only here) and a visitor-safe error."""
    sources = answer_sources(run.flow_version.graph)
    return {
        "answer": answer_text(sources, run.outputs or {}),
        "error": _visitor_error(run) if run.status == RunStatus.FAILED else None,
    }
