"""The registry of run event types: the public protocol's vocabulary (DESIGN.md).

Every event on the wire and in the log is one of these. Payload keys are documented here
once; `PROTOCOL_VERSION` is carried in `run_started` so clients can tell formats apart.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1

EVENT_TYPES: dict[str, str] = {
    "run_started": "the run began: {data: {flow, version, inputs, protocol}}",
    "node_started": "a node began: {data: {component}}",
    "on_token": "streamed text from a model: {data: <text chunk, possibly several tokens>}",
    "on_tool_call": "an agent called a tool: {data: {tool_name, tool_input, call_id}}",
    "on_tool_result": "a tool answered: {data: {call_id, tool_name, output}}",
    "on_retrieval": "a retriever returned documents: {data: {query, hits: [{id, title, score}]}}",
    "node_finished": "a node finished: {data: <its output>, duration_ms, skipped?}",
    "error": "something failed, on a node or the run: {message}",
    "completed": "the final event, exactly once: {status: success | error | cancelled}",
}

# Events a component may emit through its RunContext are flows.components.base.STREAM_EVENTS
# (the component contract); the rest are the executor's.


def session_group(workspace_id: int, session_id: str) -> str:
    """The Channels group of a session: ASCII, well under 100 characters."""
    return f"session.{workspace_id}.{session_id}"


def clean_text(text: str) -> str:
    """PostgreSQL cannot store NUL in text or jsonb: one such character from a model would
    fail the sink's whole batch, other runs' events included."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
