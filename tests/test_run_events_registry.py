"""The run event registry (runs/events.py): every event declared once, every set of event
names derived from it, and the writer and the node context refusing what it does not allow."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from django.core.management import call_command

from config.jsontext import storable, storable_text
from flows.components.base import RunContext
from runs import events, models, selectors
from runs.engine.executor import NodeContext
from runs.engine.rerun import RerunImpossible, recorded_for_rerun
from runs.engine.sink import EventSink
from runs.engine.writer import RunWriter
from runs.events import EVENT_TYPES, UnknownEvent


def _writer() -> RunWriter:
    return RunWriter(
        EventSink(), run_id="r", workspace_id=1, session_id="s", lease_token=1, last_seq=0
    )


def test_every_event_set_is_derived_from_the_registry():
    assert set(EVENT_TYPES) == {
        "run_started",
        "node_started",
        "on_token",
        "on_tool_call",
        "on_tool_result",
        "on_retrieval",
        "node_finished",
        "error",
        "node_retry",
        "budget_exceeded",
        "completed",
        "waiting_for_approval",
        "run_resumed",
        "approval_decided",
        "iteration_progress",
    }
    assert {"on_token", "on_tool_call", "on_tool_result", "on_retrieval"} == events.COMPONENT_EVENTS
    assert {"run_started", "node_started", "node_finished"} == events.LAZY_EVENTS
    assert models.LIFECYCLE_EVENTS is events.LIFECYCLE_EVENTS
    assert selectors.NODE_RESULT_EVENTS is events.NODE_RESULT_EVENTS
    assert set(events.NODE_RESULT_EVENTS) == {
        "node_started",
        "node_finished",
        "error",
        "waiting_for_approval",
        "approval_decided",
        "node_retry",
    }
    assert all(e.payload for e in events.EVENTS)


@pytest.mark.django_db
def test_the_lifecycle_index_still_matches_its_migration():
    """RunEvent's partial index condition is the registry's lifecycle events, in the order
    migrations 0003 and 0006 wrote them: a change there is a schema change."""
    call_command("makemigrations", "runs", "--check", "--dry-run", verbosity=0)


def test_the_writer_refuses_an_unknown_event_and_writes_nothing():
    writer = _writer()
    with pytest.raises(UnknownEvent, match="on_typo"):
        writer.emit("on_typo", "n", {"data": 1})
    with pytest.raises(ValueError, match="finish"):
        writer.emit("completed", "", {"status": "success"})
    writer.emit("error", "n", {"message": "still fine"})
    taken, _final = writer.take(time.monotonic(), 0.0)
    assert [(e.seq, e.event) for e in taken] == [(1, "error")]


def test_a_component_cannot_emit_an_engine_event():
    writer = _writer()
    ctx = NodeContext(writer, SimpleNamespace(workspace_id=1, pk="r", session_id="s"), "n")
    for event in ("node_finished", "completed", "run_started", "error"):
        with pytest.raises(ValueError, match="cannot emit"):
            ctx.emit(event, {})
    with pytest.raises(UnknownEvent):
        ctx.emit("on_anything", {})
    ctx.emit("on_tool_call", {"tool_name": "t", "tool_input": {}, "call_id": "c"})
    taken, _final = writer.take(time.monotonic(), 0.0)
    assert [e.event for e in taken] == ["on_tool_call"]


def test_the_component_contract_has_no_deliver_now_and_a_model_stream():
    assert not hasattr(RunContext, "deliver_now")
    assert hasattr(RunContext, "model_stream") and hasattr(NodeContext, "model_stream")


def test_every_payload_is_made_storable_by_the_writer():
    writer = _writer()
    writer.emit("error", "n", {"message": "bad\x00byte \ud800 here"})
    writer.emit("on_token", "n", {"data": "t\x00k"})
    writer.emit("node_finished", "n", {"data": {"x": float("nan"), "y": ("a\x00",)}})
    taken, _final = writer.take(time.monotonic(), 0.0)
    assert [e.payload for e in taken] == [
        {"message": "bad\ufffdbyte \ufffd here"},
        {"data": "t\ufffdk"},
        {"data": {"x": "nan", "y": ["a\ufffd"]}},
    ]


def test_storable_keeps_clean_text_as_it_is():
    for text in ("plain", "naïve — 漢字 🙂", ""):
        assert storable_text(text) is text
    assert storable({"a": [1, 2.5, True, None, "x"]}) == {"a": [1, 2.5, True, None, "x"]}


def _plan(order: list[str], edges: list[tuple[str, str]]) -> SimpleNamespace:
    component = SimpleNamespace(output_ports=lambda params: [SimpleNamespace(name="text")])
    outgoing: dict[str, list] = {}
    for source, target in edges:
        outgoing.setdefault(source, []).append(SimpleNamespace(target=target))
    nodes = {n: SimpleNamespace(component=component, params=None) for n in order}
    return SimpleNamespace(order=order, nodes=nodes, outgoing=outgoing)


def test_the_rerun_rule_reuses_everything_outside_the_downstream_or_says_what_is_missing():
    plan = _plan(["in", "a", "b", "out"], [("in", "a"), ("a", "b"), ("b", "out")])
    outcomes = {
        "in": {"data": "hi"},
        "a": {"data": "A"},
        "b": {"error": "boom"},
        "out": {"data": None, "skipped": True},
    }
    assert recorded_for_rerun(plan, "b", outcomes) == {"in": {"text": "hi"}, "a": {"text": "A"}}
    with pytest.raises(RerunImpossible, match="no recorded output to reuse: b$"):
        recorded_for_rerun(plan, "out", outcomes)
    with pytest.raises(RerunImpossible, match="not in the run's flow version"):
        recorded_for_rerun(plan, "elsewhere", outcomes)
