"""The builder and flow services: validation reports every problem at once, the plan orders
nodes and groups independent branches, versions are immutable and numbered, and the demo
flows run offline."""

from __future__ import annotations

import pytest

from accounts.models import Membership
from flows import services
from flows.builder import GraphInvalid, build_plan, validate_graph
from flows.demo import hello_graph, seed_demo_flow, support_bot_graph
from flows.models import Flow, FlowVersion
from knowledge.models import KnowledgeDocument
from tests.fakes.runner import run_plan

pytestmark = pytest.mark.django_db


def edge(s, sp, t, tp):
    return {"source": s, "source_port": sp, "target": t, "target_port": tp}


def diamond() -> dict:
    """in -> (a, b) -> join -> out: a and b are independent."""
    return {
        "nodes": [
            {"id": "in", "component": "io.chat_input"},
            {"id": "a", "component": "llm.demo", "params": {"reply": "A", "delay_ms": 0}},
            {"id": "b", "component": "llm.demo", "params": {"reply": "B", "delay_ms": 0}},
            {
                "id": "join",
                "component": "prompt.template",
                "params": {"template": "{left}+{right}"},
            },
            {"id": "out", "component": "io.text_output"},
        ],
        "edges": [
            edge("in", "text", "a", "prompt"),
            edge("in", "text", "b", "prompt"),
            edge("a", "text", "join", "left"),
            edge("b", "text", "join", "right"),
            edge("join", "prompt", "out", "text"),
        ],
    }


def owner(workspace):
    return Membership.objects.filter(workspace=workspace, role="owner").first()


def test_plan_orders_nodes_and_groups_independent_branches(workspace_a):
    plan = build_plan(diamond(), workspace_a)
    assert plan.levels == [["in"], ["a", "b"], ["join"], ["out"]]
    assert plan.order == ["in", "a", "b", "join", "out"]
    assert plan.input_node_ids == ["in"] and plan.output_node_ids == ["out"]
    assert [(e.source, e.target_port) for e in plan.incoming["join"]] == [
        ("a", "left"),
        ("b", "right"),
    ]
    results, _ = run_plan(plan, {"in": "x"}, workspace_id=workspace_a.pk)
    assert results["out"] == {"text": "A+B"}


def test_plan_without_objects_validates_but_builds_nothing(workspace_a):
    plan = build_plan(diamond(), workspace_a, build_objects=False)
    assert all(node.built is None for node in plan.nodes.values())
    assert build_plan(diamond(), workspace_a).nodes["a"].built is not None


def test_validation_reports_every_problem_at_once(workspace_a):
    graph = diamond()
    graph["nodes"][1]["params"]["delay_ms"] = -5
    graph["nodes"][2]["component"] = "llm.nope"
    graph["nodes"][3]["params"]["template"] = "{left.__class__}"
    graph["edges"].append(edge("out", "text", "ghost", "text"))
    graph["edges"].remove(edge("in", "text", "a", "prompt"))
    problems = validate_graph(graph, workspace_a)
    got = {(p.node_id, p.code) for p in problems}
    assert got >= {
        ("a", "invalid_param"),
        ("b", "unknown_component"),
        ("join", "template_rejected"),
        (None, "unknown_node"),
    }
    with pytest.raises(GraphInvalid) as info:
        build_plan(graph, workspace_a)
    assert len(info.value.problems) == len(problems)


def test_an_unconnected_required_input_is_reported(workspace_a):
    graph = {"nodes": [{"id": "o", "component": "io.text_output"}], "edges": []}
    assert [(p.node_id, p.field, p.code) for p in validate_graph(graph, workspace_a)] == [
        ("o", "ports.text", "missing_input")
    ]


def test_version_numbers_checksums_and_immutability(workspace_a):
    acting = owner(workspace_a)
    flow = services.flow_create(workspace=workspace_a, acting=acting, name="f", graph=hello_graph())
    second = services.flow_version_create(flow=flow, graph=diamond(), acting=acting.user, note="n")
    draft = services.flow_version_create(
        flow=flow, graph=diamond(), acting=acting.user, is_draft=True
    )
    assert [v.number for v in FlowVersion.objects.filter(flow=flow).order_by("number")] == [1, 2, 3]
    assert draft.is_draft and not second.is_draft
    assert second.checksum == draft.checksum == services.graph_checksum(diamond())
    reordered = {"edges": diamond()["edges"], "nodes": diamond()["nodes"]}
    assert services.graph_checksum(reordered) == second.checksum
    assert second.workspace_id == workspace_a.pk
    with pytest.raises(GraphInvalid):
        services.flow_version_create(flow=flow, graph={"nodes": "bad"}, acting=acting.user)
    assert FlowVersion.objects.filter(flow=flow).count() == 3


def test_duplicate_delete_and_scratch_flows(workspace_a, alice_owner):
    acting = owner(workspace_a)
    flow = services.flow_create(
        workspace=workspace_a, acting=acting, name="orig", graph=hello_graph()
    )
    copy = services.flow_duplicate(workspace=workspace_a, acting=acting, flow=flow)
    assert copy.name == "orig (copy)"
    assert FlowVersion.objects.get(flow=copy).graph == hello_graph()
    services.flow_delete(workspace=workspace_a, acting=acting, flow=flow)
    assert Flow.objects.get(pk=flow.pk).deleted_at is not None
    scratch = services.scratch_flow_for(workspace=workspace_a, user=alice_owner)
    assert (
        scratch.is_scratch
        and services.scratch_flow_for(workspace=workspace_a, user=alice_owner) == scratch
    )
    from flows.selectors import flows_of

    assert list(flows_of(workspace_a)) == [copy]


def test_viewer_cannot_use_flow_services(workspace_a, bob_viewer):
    from django.core.exceptions import PermissionDenied

    viewer = Membership.objects.get(workspace=workspace_a, user=bob_viewer)
    with pytest.raises(PermissionDenied):
        services.flow_create(workspace=workspace_a, acting=viewer, name="x")


@pytest.mark.django_db(transaction=True)
def test_demo_support_bot_answers_from_the_faq_offline(workspace_a, alice_owner):
    flows = seed_demo_flow(workspace=workspace_a, user=alice_owner)
    assert [f.name for f in flows] == ["Support bot", "Hello demo"]
    assert (  # the FAQ collection is a knowledge base now
        KnowledgeDocument.objects.filter(workspace=workspace_a, knowledge_base__name="faq").count()
        == 5
    )
    version = FlowVersion.objects.get(flow=flows[0])
    assert version.graph == support_bot_graph()
    plan = build_plan(version.graph, workspace_a)
    # the real demo pace is for people; tests need not wait for it
    for node in plan.nodes.values():
        if node.component.key == "llm.demo":
            node.built.delay_ms = 0
    results, contexts = run_plan(
        plan, {"question": "How do I reset my password?"}, workspace_id=workspace_a.pk
    )
    assert "reset your password" in results["answer"]["text"]
    assert results["handoff"] is None
    assert (
        contexts["retrieve"].of("on_retrieval")[0]["hits"][0]["title"] == "Resetting your password"
    )

    results, _ = run_plan(plan, {"question": "Can I talk to a human?"}, workspace_id=workspace_a.pk)
    assert results["answer"] is None
    assert results["handoff"]["text"].startswith("Of course")


def test_demo_hello_flow_runs(workspace_a):
    plan = build_plan(hello_graph(), workspace_a)
    plan.nodes["demo_1"].built.delay_ms = 0
    results, contexts = run_plan(plan, {"chat_input_1": "Hi there"}, workspace_id=workspace_a.pk)
    assert (
        results["text_output_1"]["text"]
        == "(demo model) You said: Say hello to the user, who wrote: Hi there"
    )
    assert len(contexts["demo_1"].of("on_token")) > 3


def test_seed_demo_command_creates_the_demo_flows(db):
    from django.core.management import call_command

    call_command("seed_demo")
    assert set(Flow.objects.filter(workspace__slug="demo").values_list("name", flat=True)) == {
        "Support bot",
        "Hello demo",
    }


def test_a_500_node_graph_validates_quickly_in_few_queries(
    workspace_a, django_assert_max_num_queries
):
    """A fixed number of queries, and a cost that grows with the graph, not its square.

    The cost is measured against a baseline in the same test, in this thread's CPU time
    (which a loaded machine does not inflate: time spent descheduled or waiting for the
    database is not counted): validating 500 nodes costs about ten times what 50 cost, and
    the check allows thirty. Pairwise work over the nodes would cost a hundred times."""
    import time

    acting = owner(workspace_a)
    credential = services.credential_create(
        workspace=workspace_a, acting=acting, name="c", provider="openai", api_key="k"
    )

    def fan_out(models: int) -> dict:
        nodes = [{"id": "in", "component": "io.chat_input"}]
        edges = []
        for i in range(models):
            nodes.append(
                {
                    "id": f"m{i}",
                    "component": "llm.openai_chat",
                    "params": {"credential": credential.pk},
                }
            )
            edges.append(edge("in", "text", f"m{i}", "prompt"))
        return {"nodes": nodes, "edges": edges}

    def cpu_to_validate(graph: dict) -> float:
        started = time.thread_time()
        assert validate_graph(graph, workspace_a) == []
        return time.thread_time() - started

    small, graph = fan_out(49), fan_out(499)
    cpu_to_validate(small)  # warm up what is loaded once (registry, schemas)
    baseline = min(cpu_to_validate(small) for _ in range(3))
    with django_assert_max_num_queries(5):
        cost = cpu_to_validate(graph)
    assert cost < 30 * baseline, (cost, baseline)
    plan = build_plan(graph, workspace_a, build_objects=False)
    assert plan.levels[0] == ["in"] and len(plan.levels[1]) == 499
