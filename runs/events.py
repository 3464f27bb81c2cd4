"""The registry of run event types: the public protocol's vocabulary (docs/protocol.md).

Every event on the wire and in the log is declared here once, with its payload and its
properties; every set of event names elsewhere is derived from this registry, and the run
writer refuses an event that is not in it. `PROTOCOL_VERSION` is carried in `run_started`
so clients can tell formats apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class EventType:
    """One kind of run event.

    - `emitted_by`: "component" events are what a node reports through its RunContext
      (`ctx.emit`, `ctx.model_stream`); "engine" events only the executor writes.
    - `lifecycle`: shapes a run's timeline; RunEvent's partial index covers exactly these
      rows (never the tokens), so the admin timeline and comparisons read a few entries.
    - `lazy`: does not wake the event sink; waits up to one coalescing window for what
      follows (usually the node's first token), so a run's start is one write.
    - `node_result`: tells what a node did in a run (compared between runs).
    """

    name: str
    payload: str  # the event's payload keys, documented once
    emitted_by: Literal["component", "engine"]
    lifecycle: bool = False
    lazy: bool = False
    node_result: bool = False


# The order of the lifecycle events below is the partial index's condition as migration
# 0003 wrote it: reordering them is a schema change (`makemigrations --check` says so).
EVENTS: tuple[EventType, ...] = (
    EventType(
        "run_started",
        "the run began: {data: {flow, version, inputs, protocol}}",
        "engine",
        lifecycle=True,
        lazy=True,
    ),
    EventType(
        "node_started",
        "a node began: {data: {component}}",
        "engine",
        lifecycle=True,
        lazy=True,
        node_result=True,
    ),
    EventType(
        "node_finished",
        "a node finished: {data: <its output>, duration_ms?, skipped?, recorded_from?,"
        " usage?: {input_tokens, output_tokens, model}, attempts?, took?: error_port |"
        " fallback, failure?: {message, code}, pinned_from?}",
        "engine",
        lifecycle=True,
        lazy=True,
        node_result=True,
    ),
    EventType(
        "error",
        "something failed, on a node or the run: {message, code?, attempts?}",
        "engine",
        lifecycle=True,
        node_result=True,
    ),
    EventType(
        "on_tool_call",
        "a tool was called: {data: {tool_name, tool_input, call_id}}",
        "component",
        lifecycle=True,
    ),
    EventType(
        "budget_exceeded",
        (
            "the run's spend crossed its workspace's budget; the run ends (failed) and no "
            "further model is called: {message, usage?: {input_tokens, output_tokens, model,"
            " estimated}} (usage: what the stopped call had streamed, counted by chunks)"
        ),
        "engine",
        lifecycle=True,
    ),
    EventType(
        "node_retry",
        (
            "a node's attempt failed and its policy retries it after a delay: {attempt, of,"
            " error, code, delay} (attempt: the one about to start, of: the most there will"
            " be, error/code: why the last one failed, delay: seconds waited first)"
        ),
        "engine",
        lifecycle=True,
        node_result=True,
    ),
    EventType(
        "completed",
        "the final event, exactly once: {status: success | error | cancelled}",
        "engine",
        lifecycle=True,
    ),
    EventType(
        "on_token",
        "streamed text from a model: {data: <text chunk, possibly several tokens>}",
        "component",
    ),
    EventType(
        "on_tool_result",
        "a tool answered: {data: {call_id, tool_name, output}}",
        "component",
    ),
    EventType(
        "on_retrieval",
        (
            "a retriever returned documents: {data: {query, mode, used?, notes?, hits: [{id, "
            "title, score, document_id, document, page, chunk, chunk_id?, heading?, excerpt?}]}}"
        ),
        "component",
    ),
    EventType(
        "waiting_for_approval",
        (
            "the run pauses at an approval node until a member decides: {data: {prompt, value,"
            " role, allow_edit, timeout_at}} (the run's status becomes `waiting`)"
        ),
        "engine",
        node_result=True,
    ),
    EventType(
        "approval_decided",
        (
            "the decision the run resumed with: {data: {decision: approved | rejected, by,"
            " comment, edited, timed_out}}"
        ),
        "engine",
        node_result=True,
    ),
    EventType(
        "iteration_progress",
        "an iteration node finished an item: {data: {done, total, failed}}",
        "engine",
    ),
    EventType(
        "run_resumed",
        "a waiting run goes on after a decision: {data: {after: [node ids decided]}}",
        "engine",
    ),
)

EVENT_TYPES: dict[str, EventType] = {event.name: event for event in EVENTS}
COMPONENT_EVENTS = frozenset(e.name for e in EVENTS if e.emitted_by == "component")
LIFECYCLE_EVENTS = tuple(e.name for e in EVENTS if e.lifecycle)
LAZY_EVENTS = frozenset(e.name for e in EVENTS if e.lazy)
NODE_RESULT_EVENTS = tuple(e.name for e in EVENTS if e.node_result)


class UnknownEvent(ValueError):
    """An event name that is not in the registry (a bug in the caller, never user input)."""


def event_type(name: str) -> EventType:
    """The registered event `name`, or UnknownEvent."""
    try:
        return EVENT_TYPES[name]
    except KeyError:
        raise UnknownEvent(f"{name!r} is not a registered run event (runs.events)") from None


def wire_message(
    event: str, run_id: str, seq: int, node_id: str, ts: datetime, payload: dict[str, Any]
) -> dict[str, Any]:
    """An event as it goes to clients (DESIGN.md): {event, run_id, seq, node_id, ts,
    ...payload}; the same whether it comes from the log or straight from a writer."""
    return {
        "event": event,
        "run_id": run_id,
        "seq": seq,
        "node_id": node_id or None,
        "ts": ts.isoformat(),
        **payload,
    }


def session_group(workspace_id: int, session_id: str) -> str:
    """The Channels group of a session: ASCII, well under 100 characters."""
    return f"session.{workspace_id}.{session_id}"
