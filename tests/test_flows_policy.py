"""A node's policy in the graph (flows.policy): validated at save time with problems that
name the field, an error port that can be wired only when the policy gives one, kept by
flow files, and shown by version diffs like params."""

from __future__ import annotations

import json
from typing import Any

import pytest

from accounts.models import Membership
from flows import services
from flows.builder import build_plan, validate_graph
from flows.diff import ParamChange, graph_diff
from flows.models import FlowVersion
from tests.flowgraphs import demo_graph

pytestmark = pytest.mark.django_db


def with_policy(policy: Any, **extra: Any) -> dict[str, Any]:
    graph = demo_graph(reply="hi", delay_ms=0)
    graph["nodes"][1]["policy"] = policy
    graph["nodes"][1].update(extra)
    return graph


def problems(graph: dict[str, Any], workspace) -> list[tuple[str | None, str, str, str]]:
    return [(p.node_id, p.field, p.code, p.message) for p in validate_graph(graph, workspace)]


def test_a_full_policy_is_valid_and_planned_with_the_node(workspace_a):
    policy = {
        "retries": 3,
        "backoff_seconds": 0.5,
        "retry_on": ["server_error", "timeout"],
        "timeout_seconds": 30,
        "on_failure": "fallback",
        "fallback": "Sorry.",
    }
    plan = build_plan(with_policy(policy), workspace_a)
    planned = plan.nodes["model"].policy
    assert (planned.retries, planned.attempts, planned.timeout_seconds) == (3, 4, 30)
    assert planned.retry_on == ["server_error", "timeout"] and planned.fallback == "Sorry."
    assert plan.nodes["input"].policy.attempts == 1  # no policy: one attempt, stop


@pytest.mark.parametrize(
    ("policy", "field", "code", "message"),
    [
        (
            {"retries": 9},
            "policy.retries",
            "invalid_policy",
            "“Retries” must be at most 5.",
        ),
        (
            {"retries": "2"},
            "policy.retries",
            "invalid_policy",
            "“Retries” must be a whole number.",
        ),
        (
            {"backoff_seconds": -1},
            "policy.backoff_seconds",
            "invalid_policy",
            "“Backoff (s)” must be at least 0.0.",
        ),
        (
            {"timeout_seconds": 0},
            "policy.timeout_seconds",
            "invalid_policy",
            "“Timeout (s)” must be at least 0.1.",
        ),
        (
            {"retry_on": ["node_error"]},
            "policy.retry_on.0",
            "invalid_policy",
            "“Retry on” names failures worth another attempt: server_error, rate_limited, "
            "timeout, connection (a node's own errors are never retried).",
        ),
        (
            {"retry_on": ["timeout", "timeout"]},
            "policy.retry_on",
            "invalid_policy",
            "“Retry on” names a failure twice.",
        ),
        (
            {"on_failure": "ignore"},
            "policy.on_failure",
            "invalid_policy",
            "“On failure” must be one of: stop, error_port or fallback.",
        ),
        (
            {"on_failure": "fallback"},
            "policy.fallback",
            "invalid_policy",
            "“On failure: fallback” needs a fallback value (any JSON but null).",
        ),
        (
            {"fallback": "x"},
            "policy.fallback",
            "invalid_policy",
            "A fallback value is used only when “On failure” is fallback: remove it.",
        ),
        (
            {"retry": 2},
            "policy.retry",
            "unknown_policy",
            "“retry” is not part of a node's policy.",
        ),
        ("retry twice", "policy", "invalid_policy", "`policy` is an object."),
    ],
)
def test_a_bad_policy_is_refused_with_a_problem_naming_its_field(
    workspace_a, policy, field, code, message
):
    assert problems(with_policy(policy), workspace_a) == [("model", field, code, message)]


def test_a_multi_output_nodes_fallback_names_its_outputs(workspace_a):
    graph = demo_graph(reply="hi", delay_ms=0)
    graph["nodes"][1] = {
        "id": "model",
        "component": "logic.router",
        "params": {"rules": [{"match": "keyword", "pattern": "a", "output": "yes"}]},
        "position": {"x": 0, "y": 0},
        "policy": {"on_failure": "fallback", "fallback": "no"},
    }
    graph["edges"][0]["target_port"] = "input"
    graph["edges"][1]["source_port"] = "yes"
    assert [(p.field, p.code) for p in validate_graph(graph, workspace_a)] == [
        ("policy.fallback", "invalid_policy")
    ]
    graph["nodes"][1]["policy"]["fallback"] = {"default": "no"}
    assert validate_graph(graph, workspace_a) == []


def test_the_error_port_is_wireable_only_when_the_policy_gives_it(workspace_a):
    graph = demo_graph(reply="hi", delay_ms=0)
    graph["nodes"].append(
        {"id": "oops", "component": "io.text_output", "params": {}, "position": {"x": 0, "y": 0}}
    )
    graph["edges"].append(
        {"source": "model", "source_port": "error", "target": "oops", "target_port": "text"}
    )
    assert [(p.node_id, p.code) for p in validate_graph(graph, workspace_a)] == [
        ("model", "unknown_port"),
        ("oops", "missing_input"),
    ]
    graph["nodes"][1]["policy"] = {"on_failure": "error_port"}
    assert validate_graph(graph, workspace_a) == []
    plan = build_plan(graph, workspace_a, build_objects=False)
    assert [e.source_port for e in plan.incoming["oops"]] == ["error"]


def test_an_error_port_beside_an_output_already_called_error_is_refused(workspace_a):
    graph = demo_graph(reply="hi", delay_ms=0)
    graph["nodes"][1] = {
        "id": "model",
        "component": "logic.router",
        "params": {"rules": [{"match": "keyword", "pattern": "a", "output": "error"}]},
        "position": {"x": 0, "y": 0},
        "policy": {"on_failure": "error_port"},
    }
    graph["edges"][0]["target_port"] = "input"
    graph["edges"][1]["source_port"] = "default"
    assert [(p.field, p.code) for p in validate_graph(graph, workspace_a)] == [
        ("policy.on_failure", "invalid_policy")
    ]


def test_saving_a_version_with_a_bad_policy_is_refused_and_changes_nothing(
    client_for, workspace_a, erin_editor
):
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow = services.flow_create(
        workspace=workspace_a, acting=acting, name="p", graph=demo_graph(reply="a", delay_ms=0)
    )
    response = client_for(erin_editor).post(
        f"/api/w/acme/flows/{flow.pk}/versions",
        data=json.dumps({"graph": with_policy({"retries": 6})}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert any(p["field"] == "policy.retries" for p in response.json()["problems"])
    assert FlowVersion.objects.filter(flow=flow).count() == 1


def test_a_policy_travels_in_a_flow_file(client_for, workspace_a, erin_editor):
    graph = with_policy({"retries": 2, "on_failure": "error_port"})
    graph["nodes"].append(
        {"id": "oops", "component": "io.text_output", "params": {}, "position": {"x": 0, "y": 0}}
    )
    graph["edges"].append(
        {"source": "model", "source_port": "error", "target": "oops", "target_port": "text"}
    )
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow = services.flow_create(workspace=workspace_a, acting=acting, name="p", graph=graph)
    client = client_for(erin_editor)
    exported = client.get(f"/api/w/acme/flows/{flow.pk}/export").json()
    assert exported["graph"] == graph
    imported = client.post(
        "/api/w/acme/flows/import",
        data=json.dumps({"document": exported}),
        content_type="application/json",
    )
    assert imported.status_code == 201 and imported.json()["report"]["lands_as"] == "version"
    copy = FlowVersion.objects.get(flow_id=imported.json()["flow"]["id"])
    assert copy.graph["nodes"][1]["policy"] == {"retries": 2, "on_failure": "error_port"}


def test_a_version_diff_names_policy_changes_like_params():
    before = with_policy({"retries": 1})
    after = with_policy({"retries": 3, "on_failure": "fallback", "fallback": "n/a"})
    (change,) = graph_diff(before, after).changed
    assert change.node_id == "model"
    assert change.changes == [
        ParamChange("policy.fallback", None, '"n/a"'),
        ParamChange("policy.on_failure", None, '"fallback"'),
        ParamChange("policy.retries", "1", "3"),
    ]
    removed = graph_diff(after, demo_graph(reply="hi", delay_ms=0)).changed[0]
    assert [c.key for c in removed.changes] == [
        "policy.fallback",
        "policy.on_failure",
        "policy.retries",
    ]
