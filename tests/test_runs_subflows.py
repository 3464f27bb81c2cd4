"""Sub-flows (flows.subflows, flow.subflow): a flow used as a node of another, executed
in-process with the real sink and database: two levels deep with every inner event named
under its parent node in the same run and log; pinned and published versions; a flow that
would contain itself refused at save; a child whose component the workspace disabled
fails the node with a clear error; ports held to the child's inputs and outputs."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.models import Membership
from chat.services import flow_publish
from flows.builder import GraphInvalid, validate_graph
from flows.models import WorkspaceComponentPolicy
from flows.services import flow_create, flow_version_create
from runs import services
from runs.engine.executor import execute_claimed_run
from runs.models import Run, RunStatus
from tests.wsclient import stored_log

pytestmark = pytest.mark.django_db(transaction=True)


def node(node_id: str, component: str, **params: Any) -> dict[str, Any]:
    return {"id": node_id, "component": component, "params": params, "position": {"x": 0, "y": 0}}


def edge(source: str, source_port: str, target: str, target_port: str) -> dict[str, Any]:
    return {
        "source": source,
        "source_port": source_port,
        "target": target,
        "target_port": target_port,
    }


def chain(
    input_id: str, middle: dict[str, Any], in_port: str, out_port: str, output_id: str
) -> dict:
    """input -> middle -> output."""
    return {
        "nodes": [node(input_id, "io.chat_input"), middle, node(output_id, "io.text_output")],
        "edges": [
            edge(input_id, "text", middle["id"], in_port),
            edge(middle["id"], out_port, output_id, "text"),
        ],
    }


def subflow(
    node_id: str, flow: Any, inputs: list[str], outputs: list[str], version: int | None = 1
) -> dict:
    return node(
        node_id, "flow.subflow", flow=flow.pk, version=version, inputs=inputs, outputs=outputs
    )


def _create(workspace: Any, user: Any, name: str, graph: dict[str, Any]) -> Any:
    acting = Membership.objects.get(workspace=workspace, user=user)
    return flow_create(workspace=workspace, acting=acting, name=name, graph=graph)


def _execute(
    workspace: Any, user: Any, flow: Any, inputs: dict[str, str]
) -> tuple[Run, list[dict]]:
    run = Run.objects.create(
        workspace=workspace,
        flow=flow,
        flow_version=flow.versions.order_by("-number").first(),
        session_id="s1",
        started_by=user,
        inputs=inputs,
    )
    execute_claimed_run(services.run_claim(run_id=str(run.pk), task_id="t", worker="w"))
    return Run.objects.get(pk=run.pk), stored_log(str(run.pk))


def test_a_subflow_two_levels_deep_runs_in_the_same_run_with_nested_event_ids(
    workspace_a, erin_editor
):
    deep = _create(
        workspace_a,
        erin_editor,
        "Deep",
        chain(
            "q", node("model", "llm.demo", reply="深处的回答", delay_ms=0), "prompt", "text", "a"
        ),
    )
    middle = _create(
        workspace_a,
        erin_editor,
        "Middle",
        chain("question", subflow("inner", deep, ["q"], ["a"]), "q", "a", "answer"),
    )
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow_publish(workspace=workspace_a, acting=acting, flow=middle, version_number=1)
    parent = _create(
        workspace_a,
        erin_editor,
        "Parent",
        # The middle flow by its published version.
        chain(
            "input",
            subflow("sub", middle, ["question"], ["answer"], None),
            "question",
            "answer",
            "out",
        ),
    )
    run, log = _execute(workspace_a, erin_editor, parent, {"input": "hello"})
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs == {"out": "深处的回答"}
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert [e["event"] for e in log].count("completed") == 1
    finished = [e["node_id"] for e in log if e["event"] == "node_finished"]
    # Each inner node under its parent's id, inside its parent node's start and finish.
    assert finished == [
        "input",
        "sub.question",
        "sub.inner.q",
        "sub.inner.model",
        "sub.inner.a",
        "sub.inner",
        "sub.answer",
        "sub",
        "out",
    ]
    tokens = "".join(e["data"] for e in log if e["event"] == "on_token")
    assert {e["node_id"] for e in log if e["event"] == "on_token"} == {"sub.inner.model"}
    assert tokens == "深处的回答"
    inner_input = next(
        e for e in log if e["event"] == "node_finished" and e["node_id"] == "sub.inner.q"
    )
    assert inner_input["data"] == "hello"


def test_a_flow_that_would_contain_itself_is_refused_at_save(workspace_a, erin_editor):
    first = _create(
        workspace_a,
        erin_editor,
        "First",
        chain("i", node("m", "llm.demo", reply="x"), "prompt", "text", "o"),
    )
    second = _create(
        workspace_a,
        erin_editor,
        "Second",
        chain("i", subflow("s", first, ["i"], ["o"]), "i", "o", "o"),
    )
    # Directly ...
    with pytest.raises(GraphInvalid) as direct:
        flow_version_create(
            flow=first,
            graph=chain("i", subflow("me", first, ["i"], ["o"]), "i", "o", "o"),
            acting=erin_editor,
        )
    assert [(p.node_id, p.code) for p in direct.value.problems] == [("me", "subflow_cycle")]
    # ... and through another flow.
    with pytest.raises(GraphInvalid) as through:
        flow_version_create(
            flow=first,
            graph=chain("i", subflow("loop", second, ["i"], ["o"]), "i", "o", "o"),
            acting=erin_editor,
        )
    assert [(p.node_id, p.code) for p in through.value.problems] == [("loop", "subflow_cycle")]
    assert first.versions.count() == 1


def test_the_node_is_held_to_the_child_ports_and_workspace(
    workspace_a, erin_editor, workspace_b, mallory_owner
):
    child = _create(
        workspace_a,
        erin_editor,
        "Child",
        chain("i", node("m", "llm.demo", reply="x"), "prompt", "text", "o"),
    )
    stale = chain("i", subflow("s", child, ["i"], ["gone"]), "i", "gone", "out")
    assert [p.code for p in validate_graph(stale, workspace_a)] == ["subflow_changed"]
    unpublished = chain("i", subflow("s", child, ["i"], ["o"], None), "i", "o", "out")
    assert [p.code for p in validate_graph(unpublished, workspace_a)] == ["subflow_missing"]
    # Another workspace's flow is not there for it.
    foreign = chain("i", subflow("s", child, ["i"], ["o"]), "i", "o", "out")
    assert [p.code for p in validate_graph(foreign, workspace_b)] == ["subflow_missing"]


def test_a_component_disabled_inside_the_child_fails_the_node_clearly(workspace_a, erin_editor):
    child = _create(
        workspace_a,
        erin_editor,
        "Child",
        chain("i", node("m", "llm.demo", reply="x"), "prompt", "text", "o"),
    )
    parent = _create(
        workspace_a,
        erin_editor,
        "Parent",
        chain("input", subflow("sub", child, ["i"], ["o"]), "i", "o", "out"),
    )
    WorkspaceComponentPolicy.objects.create(workspace=workspace_a, key="llm.demo")
    run, log = _execute(workspace_a, erin_editor, parent, {"input": "hi"})
    assert run.status == RunStatus.FAILED
    error = next(e for e in log if e["event"] == "error" and e["node_id"] == "sub")
    assert "can no longer run" in error["message"] and "llm.demo" in error["message"]
    assert not [e for e in log if (e["node_id"] or "").startswith("sub.")]
