"""A sub-flow built in a real browser against the live stack: an editor drops a Sub-flow
node, picks another flow of the workspace (its inputs and outputs become the node's ports),
wires it, runs the flow and sees the child's steps under the node and its answer.
Screenshot: test-artifacts/screenshots/subflow.png."""

from __future__ import annotations

import pytest

from accounts.models import Membership
from flows import services
from runs.models import Run, RunStatus
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    drag_connection,
    drag_to_canvas,
    open_page_fixture,
    tid,
)
from tests.test_runs_subflows import chain, node

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def test_an_editor_runs_another_flow_as_a_node(open_page, live_stack, workspace_a, erin_editor):
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    services.flow_create(
        workspace=workspace_a,
        acting=acting,
        name="Summarise",
        graph=chain(
            "question",
            node("model", "llm.demo", reply="一句话总结", delay_ms=20),
            "prompt",
            "text",
            "answer",
        ),
    )
    parent = services.flow_create(workspace=workspace_a, acting=acting, name="Support")
    graph = {
        "nodes": [
            {**node("chat_input_1", "io.chat_input"), "position": {"x": 40, "y": 160}},
            {**node("text_output_1", "io.text_output"), "position": {"x": 620, "y": 160}},
        ],
        "edges": [],
    }
    services.draft_save(
        workspace=workspace_a, acting=acting, flow=parent, graph=graph, base_revision=0
    )
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{parent.pk}/")
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    page.wait_for_selector(tid("out-chat_input_1-text"))

    drag_to_canvas(page, "flow.subflow", 330, 320)
    page.click(tid("node-subflow_1"))
    page.wait_for_selector(tid("subflow-picker"))
    page.select_option(tid("subflow-flow"), label="Summarise")
    # Not published: its newest saved version is pinned, and its ports are the node's.
    page.wait_for_selector(f"{tid('subflow-ports')}:has-text('Inputs: question')")
    page.wait_for_function(
        "(sel) => document.querySelector(sel)?.value === '1'", arg=tid("subflow-version")
    )
    page.wait_for_selector(tid("in-subflow_1-question"))
    drag_connection(page, "out-chat_input_1-text", "in-subflow_1-question")
    drag_connection(page, "out-subflow_1-answer", "in-text_output_1-text")
    page.wait_for_function("() => document.querySelectorAll('.react-flow__edge').length === 2")

    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "我的订单到哪了？")
    page.click(tid("run-button"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
    page.wait_for_selector(tid("run-node-subflow_1.model"))
    page.wait_for_selector(f"{tid('final-text_output_1')}:has-text('一句话总结')")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "subflow.png"))

    run = Run.objects.get(flow=parent)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"text_output_1": "一句话总结"}
    nodes = run.flow_version.graph["nodes"]
    sub = next(n for n in nodes if n["component"] == "flow.subflow")
    assert sub["params"]["inputs"] == ["question"] and sub["params"]["outputs"] == ["answer"]
    assert sub["params"]["version"] == 1
    assert editor.console_errors == []
