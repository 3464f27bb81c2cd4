"""Iteration (flow.iterate): another flow run once per item of a list, several at once,
inside the same run. In-process with the real sink and database: 50 items with
concurrency 5 on the demo model give their outputs in order, every inner event names and
tags its item, never more than 5 items run at once, progress after each; a failing item
fails the node, or is skipped or collected. Live (Daphne + Celery): a client dropping at
10 random points receives the iteration's log exactly."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from accounts.models import Membership
from flows.builder import GraphInvalid
from flows.services import flow_create
from tests.test_runs_subflows import _execute, chain, node
from tests.wsclient import assert_exactly_the_log, follow_with_drops

pytestmark = pytest.mark.django_db(transaction=True)


def _body(workspace: Any, user: Any, middle: dict[str, Any], in_port: str, out_port: str) -> Any:
    acting = Membership.objects.get(workspace=workspace, user=user)
    return flow_create(
        workspace=workspace,
        acting=acting,
        name="Body",
        graph=chain("item", middle, in_port, out_port, "answer"),
    )


def _parent(workspace: Any, user: Any, body: Any, **params: Any) -> Any:
    loop = node(
        "loop",
        "flow.iterate",
        flow=body.pk,
        version=1,
        inputs=["item"],
        outputs=["answer"],
        **params,
    )
    nodes = [
        node("input", "io.chat_input"),
        node("split", "parser.json"),
        loop,
        node("out", "io.text_output"),
        node("errors", "io.text_output"),
    ]
    for i, (x, y) in enumerate([(0, 100), (240, 100), (480, 100), (760, 0), (760, 220)]):
        nodes[i]["position"] = {"x": x, "y": y}
    graph = {
        "nodes": nodes,
        "edges": [
            {"source": "input", "source_port": "text", "target": "split", "target_port": "text"},
            {"source": "split", "source_port": "json", "target": "loop", "target_port": "items"},
            {"source": "loop", "source_port": "results", "target": "out", "target_port": "text"},
            {"source": "loop", "source_port": "errors", "target": "errors", "target_port": "text"},
        ],
    }
    acting = Membership.objects.get(workspace=workspace, user=user)
    return flow_create(workspace=workspace, acting=acting, name="Loop", graph=graph)


def _echo_body(workspace: Any, user: Any) -> Any:
    # An empty reply: the demo model answers "(demo model) You said: <the prompt's last line>".
    return _body(workspace, user, node("model", "llm.demo", reply="", delay_ms=2), "prompt", "text")


ITEMS = [f"item-{i}" for i in range(50)]


def _finished(log: list[dict[str, Any]], node_id: str) -> Any:
    return next(e for e in log if e["event"] == "node_finished" and e["node_id"] == node_id)["data"]


def test_fifty_items_five_at_a_time_in_order_each_event_tagged(workspace_a, erin_editor):
    import json

    parent = _parent(workspace_a, erin_editor, _echo_body(workspace_a, erin_editor), concurrency=5)
    run, log = _execute(workspace_a, erin_editor, parent, {"input": json.dumps(ITEMS)})
    assert run.status == "succeeded", run.error
    loop = _finished(log, "loop")
    assert loop["results"] == [f"(demo model) You said: {item}" for item in ITEMS]
    assert loop["errors"] == []
    # The text output shows the list, one result after another.
    assert run.outputs["out"] == "\n\n".join(loop["results"])
    inner = [e for e in log if (e["node_id"] or "").startswith("loop.")]
    for event in inner:
        index = int(event["node_id"].split(".")[1])
        assert event["item"] == index, event
    tokens = {}
    for event in inner:
        if event["event"] == "on_token":
            tokens[event["item"]] = tokens.get(event["item"], "") + event["data"]
    assert tokens == {i: f"(demo model) You said: {item}" for i, item in enumerate(ITEMS)}
    # Never more than 5 items between their first and their last event.
    open_items: set[int] = set()
    most = 0
    for event in log:
        node_id = event["node_id"] or ""
        if not node_id.startswith("loop."):
            continue
        index = int(node_id.split(".")[1])
        if node_id.endswith(".item") and event["event"] == "node_finished":
            open_items.add(index)
        if node_id.endswith(".answer") and event["event"] == "node_finished":
            open_items.discard(index)
        most = max(most, len(open_items))
    assert 1 < most <= 5
    progress = [e["data"] for e in log if e["event"] == "iteration_progress"]
    assert [p["done"] for p in progress] == list(range(1, 51))
    assert progress[-1] == {"done": 50, "total": 50, "failed": 0}


def test_a_failing_item_fails_the_node_or_is_skipped_or_collected(workspace_a, erin_editor):
    import json

    body = _body(workspace_a, erin_editor, node("parse", "parser.json"), "text", "json")
    items = json.dumps(['{"a": 1}', "not json", '{"b": 2}'])

    failing = _parent(workspace_a, erin_editor, body, concurrency=1)
    run, log = _execute(workspace_a, erin_editor, failing, {"input": items})
    assert run.status == "failed"
    error = next(e for e in log if e["event"] == "error" and e["node_id"] == "loop")
    assert error["message"].startswith("Item 1:")

    collecting = _parent(workspace_a, erin_editor, body, on_item_error="collect")
    run, log = _execute(workspace_a, erin_editor, collecting, {"input": items})
    assert run.status == "succeeded", run.error
    loop = _finished(log, "loop")
    assert loop["results"] == ['{"a": 1}', None, '{"b": 2}']  # the body's text output
    assert [e["item"] for e in loop["errors"]] == [1]
    assert "JSON" in loop["errors"][0]["message"]


@pytest.mark.processes
def test_a_client_dropping_at_ten_points_receives_the_iteration_exactly(
    live_stack, workspace_a, erin_editor, token_for
):
    import json

    parent = _parent(workspace_a, erin_editor, _echo_body(workspace_a, erin_editor), concurrency=5)
    token = token_for(workspace_a, erin_editor)
    run_id, received = asyncio.run(
        follow_with_drops(
            live_stack.ws_url,
            "acme",
            token,
            {"action": "run", "flow": parent.pk, "inputs": {"input": json.dumps(ITEMS)}},
            drops=10,
            rng=random.Random(17),
        )
    )
    log = assert_exactly_the_log(received, run_id)
    assert log[-1]["status"] == "success"
    assert sum(1 for e in log if e["event"] == "iteration_progress") == 50


def _looping(workspace: Any, user: Any, body: Any, **params: Any) -> Any:
    loop = node(
        "again", "flow.loop", flow=body.pk, version=1, inputs=["item"], outputs=["answer"], **params
    )
    graph = {
        "nodes": [node("input", "io.chat_input"), loop, node("out", "io.text_output")],
        "edges": [
            {"source": "input", "source_port": "text", "target": "again", "target_port": "input"},
            {"source": "again", "source_port": "result", "target": "out", "target_port": "text"},
        ],
    }
    acting = Membership.objects.get(workspace=workspace, user=user)
    return flow_create(workspace=workspace, acting=acting, name="Again", graph=graph)


def test_a_loop_stops_at_its_condition_and_one_at_its_maximum(workspace_a, erin_editor):
    body = _echo_body(workspace_a, erin_editor)  # each answer quotes the one before
    stops = _looping(
        workspace_a, erin_editor, body, until="regex", pattern="(You said.*){3}", max_iterations=10
    )
    run, log = _execute(workspace_a, erin_editor, stops, {"input": "start"})
    assert run.status == "succeeded", run.error
    said = "(demo model) You said: "
    assert run.outputs["out"] == said * 3 + "start"
    assert _finished(log, "again")["iterations"] == {"count": 3, "done": True}
    assert [e["data"]["done"] for e in log if e["event"] == "iteration_progress"] == [1, 2, 3]
    models = [
        e for e in log if e["event"] == "node_finished" and (e["node_id"] or "").endswith(".model")
    ]
    assert [(e["node_id"], e["item"]) for e in models] == [
        (f"again.{k}.model", k) for k in range(3)
    ]

    capped = _looping(
        workspace_a, erin_editor, body, until="keyword", pattern="永远不会出现", max_iterations=4
    )
    run, log = _execute(workspace_a, erin_editor, capped, {"input": "start"})
    assert run.status == "succeeded", run.error
    assert _finished(log, "again")["iterations"] == {"count": 4, "done": False}
    assert run.outputs["out"] == said * 4 + "start"


def test_a_loop_without_its_pattern_is_refused_at_save(workspace_a, erin_editor):
    body = _echo_body(workspace_a, erin_editor)
    with pytest.raises(GraphInvalid) as refused:
        _looping(workspace_a, erin_editor, body, until="keyword", pattern="")
    assert [p.code for p in refused.value.problems] == ["required"]
