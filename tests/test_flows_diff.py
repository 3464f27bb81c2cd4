"""A version diff (flows.diff) names what changed with its old and new value; the versions
page, the API (and so the editor) and the admin all show this one reading."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import Membership
from flows.diff import SHOWN_CHARS, ParamChange, graph_diff
from flows.models import Flow
from flows.services import flow_create, flow_version_create


def _graph(reply: str = "hi", *, extra: bool = False, x: int = 0) -> dict:
    nodes = [
        {"id": "in", "component": "io.chat_input", "params": {}, "position": {"x": x, "y": 0}},
        {
            "id": "llm",
            "component": "llm.demo",
            "params": {"reply": reply},
            "position": {"x": 200, "y": 0},
        },
        {"id": "out", "component": "io.text_output", "params": {}, "position": {"x": 400, "y": 0}},
    ]
    edges = [
        {"source": "in", "source_port": "text", "target": "llm", "target_port": "prompt"},
        {"source": "llm", "source_port": "text", "target": "out", "target_port": "text"},
    ]
    if extra:
        nodes.append(
            {
                "id": "out2",
                "component": "io.text_output",
                "params": {},
                "position": {"x": 0, "y": 0},
            }
        )
        edges.append(
            {"source": "llm", "source_port": "text", "target": "out2", "target_port": "text"}
        )
    return {"nodes": nodes, "edges": edges}


def test_a_changed_parameter_is_named_with_its_old_and_new_value():
    diff = graph_diff(_graph("hello"), _graph("good bye", extra=True))
    assert [(n.node_id, n.changes) for n in diff.changed] == [
        ("llm", [ParamChange("reply", '"hello"', '"good bye"')])
    ]
    assert diff.added == ["out2"] and diff.removed == []
    assert diff.edges_added == ["llm.text → out2.text"] and diff.edges_removed == []
    assert diff.components == {"llm": "llm.demo", "out2": "io.text_output"}


def test_moving_a_node_is_not_a_change_and_a_cleared_key_reads_not_set():
    assert graph_diff(_graph(x=0), _graph(x=500)).empty
    before, after = _graph(), _graph()
    after["nodes"][1]["params"] = {}
    after["nodes"][1]["component"] = "llm.openai_chat"
    (node,) = graph_diff(before, after).changed
    assert node.changes == [
        ParamChange("component", '"llm.demo"', '"llm.openai_chat"'),
        ParamChange("reply", '"hi"', None),
    ]


def test_a_long_value_is_cut():
    (node,) = graph_diff(_graph("a"), _graph("b" * 5000)).changed
    assert len(node.changes[0].after) == SHOWN_CHARS + 1 and node.changes[0].after.endswith("…")


def _flow_with_two_versions(workspace, user) -> Flow:
    acting = Membership.objects.get(workspace=workspace, user=user)
    flow = flow_create(workspace=workspace, acting=acting, name="Diffed", graph=_graph("one"))
    flow_version_create(flow=flow, graph=_graph("two", extra=True), acting=user)
    return flow


@pytest.mark.django_db
def test_the_api_page_and_admin_show_the_same_reading(
    client_for, staff_client, workspace_a, alice_owner, bob_viewer
):
    flow = _flow_with_two_versions(workspace_a, alice_owner)
    body = client_for(bob_viewer).get(f"/api/w/acme/flows/{flow.pk}/diff").json()  # latest two
    assert (body["a"], body["b"], body["added"]) == (1, 2, ["out2"])
    assert body["changed"] == [
        {"node_id": "llm", "changes": [{"key": "reply", "before": '"one"', "after": '"two"'}]}
    ]
    shown = "~ llm: reply <code>&quot;one&quot;</code> → <code>&quot;two&quot;</code>"
    page = client_for(bob_viewer).get(f"/w/acme/flows/{flow.pk}/versions/?a=1&b=2")
    assert shown in page.content.decode()
    admin = staff_client.get(reverse("admin:flows_flow_diff", args=[flow.pk]) + "?a=1&b=2")
    assert shown in admin.content.decode()


@pytest.mark.django_db
def test_the_api_refuses_a_version_the_flow_does_not_have(client_for, workspace_a, alice_owner):
    flow = _flow_with_two_versions(workspace_a, alice_owner)
    assert (
        client_for(alice_owner).get(f"/api/w/acme/flows/{flow.pk}/diff?a=1&b=9").status_code == 404
    )
