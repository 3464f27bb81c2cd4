"""Pinning a node's output (flows.pinning): a pinned node stands on what it recorded in an
earlier run of the same workspace, read from that run's log, without calling its model;
the log says so and from which run. Executed in-process with the real sink and database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from accounts.models import Membership
from flows import services
from flows.builder import validate_graph
from flows.diff import graph_diff
from flows.models import FlowVersion
from runs import services as run_services
from runs.engine.executor import execute_claimed_run
from runs.models import Run, RunStatus
from tests import flowgraphs
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.wsclient import stored_log

pytestmark = pytest.mark.django_db(transaction=True)


def _with_prompt(graph: dict[str, Any]) -> dict[str, Any]:
    """input -> model -> polish (prompt template) -> output."""
    graph["nodes"].insert(
        2,
        {
            "id": "polish",
            "component": "prompt.template",
            "params": {"template": "Polished: {text}"},
            "position": {"x": 400, "y": 0},
        },
    )
    graph["edges"][1] = {
        "source": "model",
        "source_port": "text",
        "target": "polish",
        "target_port": "text",
    }
    graph["edges"].append(
        {"source": "polish", "source_port": "prompt", "target": "output", "target_port": "text"}
    )
    return graph


def _execute(workspace, user, graph: dict[str, Any]) -> tuple[Run, list[dict[str, Any]]]:
    run = flowgraphs.queued_run(workspace, user, graph, {"input": "hi"})
    execute_claimed_run(run_services.run_claim(run_id=str(run.pk), task_id="t", worker="w"))
    return Run.objects.get(pk=run.pk), stored_log(str(run.pk))


def _pinned(graph: dict[str, Any], run: Run | str) -> dict[str, Any]:
    pinned = json.loads(json.dumps(graph))
    pinned["nodes"][1]["pinned"] = {"run": str(getattr(run, "pk", run))}
    return pinned


def test_a_pinned_node_reuses_its_recorded_output_and_calls_no_model(workspace_a, erin_editor):
    with FakeOpenAIServer(reply="The recorded answer") as server:
        credential = flowgraphs.openai_credential(workspace_a, erin_editor, server.base_url)
        graph = _with_prompt(flowgraphs.openai_graph(credential.pk))
        first, _ = _execute(workspace_a, erin_editor, graph)
        assert len(server.requests) == 1

        # The editor changes what follows the model; the model stays pinned to run 1.
        later = _pinned(graph, first)
        later["nodes"][2]["params"]["template"] = "Better: {text}"
        second, log = _execute(workspace_a, erin_editor, later)
        assert len(server.requests) == 1  # no model was called
    model = [e for e in log if e["node_id"] == "model"]
    assert [e["event"] for e in model] == ["node_finished"]
    assert model[0]["data"] == "The recorded answer"
    assert model[0]["pinned_from"] == str(first.pk)
    assert second.status == RunStatus.SUCCEEDED
    assert second.outputs == {"output": "Better: The recorded answer"}


def test_a_rerun_of_a_run_with_a_pinned_node_pins_it_again(workspace_a, erin_editor):
    first, _ = _execute(
        workspace_a, erin_editor, flowgraphs.demo_graph(reply="once upon", delay_ms=0)
    )
    graph = _pinned(flowgraphs.demo_graph(reply="a different reply", delay_ms=0), first)
    second, _ = _execute(workspace_a, erin_editor, graph)
    assert second.outputs == {"output": "once upon"}
    rerun = Run.objects.create(
        workspace=workspace_a,
        flow=second.flow,
        flow_version=second.flow_version,
        session_id="s1",
        started_by=erin_editor,
        inputs=second.inputs,
        rerun_of=second,
        rerun_from_node="model",
    )
    execute_claimed_run(run_services.run_claim(run_id=str(rerun.pk), task_id="t", worker="w"))
    log = stored_log(str(rerun.pk))
    model = [e for e in log if e["node_id"] == "model"]
    assert [(e["event"], e.get("pinned_from")) for e in model] == [("node_finished", str(first.pk))]
    assert Run.objects.get(pk=rerun.pk).outputs == {"output": "once upon"}


def test_a_pin_must_name_a_run_of_this_workspace_where_the_node_finished(
    workspace_a, workspace_b, erin_editor, mallory_owner
):
    graph = flowgraphs.demo_graph(reply="x", delay_ms=0)
    theirs, _ = _execute(workspace_b, mallory_owner, graph)
    ours, _ = _execute(workspace_a, erin_editor, graph)

    def problems(pinned: Any) -> list[tuple[str | None, str, str]]:
        changed = json.loads(json.dumps(graph))
        changed["nodes"][1]["pinned"] = pinned
        return [(p.node_id, p.field, p.code) for p in validate_graph(changed, workspace_a)]

    assert problems({"run": str(ours.pk)}) == []
    # Another workspace's run is "not there", like a run that never existed.
    assert problems({"run": str(theirs.pk)}) == [("model", "pinned.run", "pin_unavailable")]
    assert problems({"run": "00000000-0000-0000-0000-000000000000"}) == [
        ("model", "pinned.run", "pin_unavailable")
    ]
    assert problems({"run": "not a run"}) == [("model", "pinned.run", "pin_unavailable")]
    assert problems({"run": 7}) == [("model", "pinned", "invalid_pin")]
    assert problems({"run": str(ours.pk), "data": "forged"}) == [("model", "pinned", "invalid_pin")]
    assert problems("yes") == [("model", "pinned", "invalid_pin")]


def test_a_node_that_failed_or_changed_component_cannot_be_pinned_to_that_run(
    workspace_a, erin_editor
):
    with FakeOpenAIServer(fail_status=500) as server:
        credential = flowgraphs.openai_credential(workspace_a, erin_editor, server.base_url)
        failed, _ = _execute(workspace_a, erin_editor, flowgraphs.openai_graph(credential.pk))
    assert failed.status == RunStatus.FAILED
    graph = _pinned(flowgraphs.openai_graph(credential.pk), failed)
    assert [(p.field, p.code) for p in validate_graph(graph, workspace_a)] == [
        ("pinned.run", "pin_unavailable")
    ]
    demo, _ = _execute(workspace_a, erin_editor, flowgraphs.demo_graph(reply="x", delay_ms=0))
    stale = _pinned(flowgraphs.openai_graph(credential.pk), demo)
    assert [(p.field, p.code) for p in validate_graph(stale, workspace_a)] == [
        ("pinned.run", "pin_stale")
    ]


def test_saving_a_pin_to_another_workspaces_run_is_refused(
    client_for, workspace_a, workspace_b, erin_editor, mallory_owner
):
    graph = flowgraphs.demo_graph(reply="x", delay_ms=0)
    theirs, _ = _execute(workspace_b, mallory_owner, graph)
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow = services.flow_create(workspace=workspace_a, acting=acting, name="p", graph=graph)
    response = client_for(erin_editor).post(
        f"/api/w/acme/flows/{flow.pk}/versions",
        data=json.dumps({"graph": _pinned(graph, theirs)}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert [p["code"] for p in response.json()["problems"]] == ["pin_unavailable"]
    assert FlowVersion.objects.filter(flow=flow).count() == 1


def test_an_exported_pin_is_dropped_on_import_with_a_note(client_for, workspace_a, erin_editor):
    ours, _ = _execute(workspace_a, erin_editor, flowgraphs.demo_graph(reply="x", delay_ms=0))
    graph = _pinned(flowgraphs.demo_graph(reply="x", delay_ms=0), ours)
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow = services.flow_create(workspace=workspace_a, acting=acting, name="p", graph=graph)
    client = client_for(erin_editor)
    exported = client.get(f"/api/w/acme/flows/{flow.pk}/export").json()
    assert exported["graph"]["nodes"][1]["pinned"] == {"run": str(ours.pk)}
    imported = client.post(
        "/api/w/acme/flows/import",
        data=json.dumps({"document": exported}),
        content_type="application/json",
    ).json()
    assert imported["report"]["lands_as"] == "version"
    assert any(note.startswith("Unpinned model:") for note in imported["report"]["notes"])
    copy = FlowVersion.objects.get(flow_id=imported["flow"]["id"])
    assert "pinned" not in copy.graph["nodes"][1]


def test_a_version_diff_names_a_pin():
    graph = flowgraphs.demo_graph(reply="x", delay_ms=0)
    (change,) = graph_diff(graph, _pinned(graph, "r-1")).changed
    assert [(c.key, c.before, c.after) for c in change.changes] == [
        ("pinned", None, '{"run": "r-1"}')
    ]
