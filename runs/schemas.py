"""The shapes of run requests, shared by the HTTP API (runs/api.py) and the WebSocket
protocol (runs/consumers.py), so both doors accept and refuse the same things.

The WebSocket messages are the protocol's client -> server half (docs/protocol.md): one
model per `action`, strict (a `true` is not a run id, `"3"` is not a version), unknown keys
refused. A bare graph frame (no `action`, but `nodes`) starts a run of an unsaved graph.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from ninja import Schema
from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from accounts.api_auth import DbInt

# Each type's description says what is expected, in the API's schema and in a `rejected`.
RunId = Annotated[
    str, StringConstraints(min_length=1, max_length=64), Field(description="a run id")
]
NodeId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    Field(description="a node id of 1 to 100 characters"),
]
FlowId = Annotated[DbInt, Field(description="a flow id (a whole number)")]
Number = Annotated[DbInt, Field(description="a whole number >= 0")]
# A client's tag for matching replies to requests: it comes back on the `accepted` or
# `rejected` the message causes. Integers must survive a JavaScript number.
RequestId = (
    Annotated[str, StringConstraints(min_length=1, max_length=64)]
    | Annotated[int, Field(gt=-(2**53), lt=2**53)]
)
REQUEST_ID_RULE = "a string of 1 to 64 characters or an integer that fits in a JavaScript number"
Speed = Annotated[
    Literal["instant"] | Annotated[float, Field(ge=0.1, le=100)],
    Field(description='a number from 0.1 to 100, or "instant"'),
]
Inputs = Annotated[dict[str, Any], Field(description="an object mapping input node ids to text")]


# --- requests, as both doors take them ----------------------------------------------------


class RunRequest(Schema):
    """Start a run of a saved flow: `inputs` maps input node ids to text (`{"input": ...}`
    is shorthand for a flow with one input node); the latest version unless one is named."""

    inputs: Inputs = {}
    version: Number | None = Field(None, description="a version number (a whole number)")


class RerunRequest(Schema):
    """Run a run again (same version and inputs); with `from_node`, only that node and what
    depends on it execute again, the rest reuse their recorded outputs."""

    from_node: NodeId | None = Field(None, description="a node id of 1 to 100 characters")


# --- HTTP bodies and queries (a session is chosen per request; a socket has its own) ------


class RunStartIn(RunRequest):
    session_id: str | None = None


class RerunIn(RerunRequest):
    session_id: str | None = None


MAX_EVENT_PAGE = 1000


class EventsQuery(Schema):
    after_seq: DbInt = 0
    limit: DbInt = MAX_EVENT_PAGE


# --- WebSocket messages ------------------------------------------------------------------


class Message(Schema):
    model_config = ConfigDict(strict=True, extra="forbid")

    request_id: RequestId | None = Field(None, description=REQUEST_ID_RULE)


class RunMessage(Message, RunRequest):
    """`{"action": "run", "flow", "version"?, "inputs"?, "conversation"?}`: with a
    conversation id, the run is that conversation's next turn (in its session)."""

    action: Literal["run"]
    flow: FlowId
    conversation: str | None = Field(None, max_length=64)


class GraphMessage(Message):
    """A bare flow graph (`{"nodes", "edges", "inputs"?, "flow"?}`): run an unsaved graph,
    saved as a draft version of `flow` (or of the member's scratch flow). The graph itself
    is validated by the builder, which reports every problem (`invalid_graph`)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    action: Literal["graph"] = "graph"
    nodes: Any
    edges: Any = None
    flow: FlowId | None = None
    inputs: Inputs = {}


class ResumeMessage(Message):
    """Send every event of the run after `after_seq`, then continue live."""

    action: Literal["resume"]
    run_id: RunId
    after_seq: Number = 0


class CancelMessage(Message):
    action: Literal["cancel"]
    run_id: RunId


class DecideMessage(Message):
    """Decide a run's waiting approval: approve (the value as asked, or `value` instead, when
    the node allows editing) or reject, with an optional comment."""

    action: Literal["decide"]
    run_id: RunId
    node_id: NodeId
    decision: Literal["approve", "reject"] = Field(description='"approve" or "reject"')
    value: Any = None
    comment: Annotated[str, StringConstraints(max_length=2000)] = Field(
        "", description="text of at most 2000 characters"
    )


class RerunMessage(Message, RerunRequest):
    action: Literal["rerun"]
    run_id: RunId


class ReplayMessage(Message):
    """Play a finished run back from its log: up to `from_seq` at once, then at `speed`."""

    action: Literal["replay"]
    run_id: RunId
    speed: Speed = 1.0
    from_seq: Number = 0


class ReplayPauseMessage(Message):
    action: Literal["replay_pause"]


class ReplayPlayMessage(Message):
    action: Literal["replay_play"]


ClientMessage = Annotated[
    RunMessage
    | GraphMessage
    | ResumeMessage
    | CancelMessage
    | DecideMessage
    | RerunMessage
    | ReplayMessage
    | ReplayPauseMessage
    | ReplayPlayMessage,
    Field(discriminator="action"),
]
ACTIONS = (
    "run",
    "resume",
    "cancel",
    "decide",
    "rerun",
    "replay",
    "replay_pause",
    "replay_play",
)
_client_message: TypeAdapter[Any] = TypeAdapter(ClientMessage)
_request_id: TypeAdapter[Any] = TypeAdapter(RequestId | None)

# A refused field that has a code of its own; every other refusal is `invalid_request`.
FIELD_CODES = {"inputs": "invalid_inputs"}


class MessageRefused(Exception):
    """A message outside the protocol: `code` and `message` go back in a `rejected`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def request_id_of(content: Any) -> str | int | None:
    """The message's `request_id` (None without one), checked before anything else so that
    every other refusal can carry it."""
    if not isinstance(content, dict) or "request_id" not in content:
        return None
    try:
        return _request_id.validate_python(content["request_id"], strict=True)
    except ValidationError as exc:
        raise MessageRefused("invalid_request", f"`request_id` must be {REQUEST_ID_RULE}.") from exc


def parse_message(content: Any) -> Message:
    """The protocol message `content` is (a decoded JSON frame), or MessageRefused."""
    if not isinstance(content, dict):
        raise MessageRefused("invalid_message", "Send a JSON object.")
    action = content.get("action")
    if action is None and "nodes" in content:
        content = {**content, "action": "graph"}
    elif action not in ACTIONS:
        raise MessageRefused(
            "unknown_action",
            "Unknown action: use " + ", ".join(ACTIONS[:-1]) + " or " + ACTIONS[-1] + ".",
        )
    try:
        return _client_message.validate_python(content)
    except ValidationError as exc:
        raise _refusal(exc) from exc


def _refusal(exc: ValidationError) -> MessageRefused:
    """The first refused field, said as what it should be."""
    error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    tag, field = error["loc"][0], str(error["loc"][1]) if len(error["loc"]) > 1 else ""
    if error["type"] == "extra_forbidden":
        return MessageRefused("invalid_request", f"`{field}` is not part of this message.")
    declared = _MESSAGES[str(tag)].model_fields.get(field)
    if declared is None:  # the discriminator itself
        return MessageRefused("invalid_request", error["msg"] + ".")
    expected = declared.description or error["msg"].lower()
    return MessageRefused(
        FIELD_CODES.get(field, "invalid_request"), f"`{field}` must be {expected}."
    )


_MESSAGES: dict[str, type[Message]] = {
    get_args(message.model_fields["action"].annotation)[0]: message
    for message in get_args(get_args(ClientMessage)[0])
}
