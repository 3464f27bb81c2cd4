"""A node's failure policy and its pin in a real browser against the live stack: set
retries and "take the error port" in the node's panel, wire the error port that appears,
save, run against a provider that always fails, and watch the retry and the error path in
the run view; pin a node to its last output, change it, and see the pinned output reused."""

from __future__ import annotations

import pytest

from accounts.models import Membership
from flows.models import FlowVersion
from flows.services import flow_create
from runs.models import RunStatus
from tests import flowgraphs
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    demo_flow,
    drag_connection,
    drag_to_canvas,
    latest_run,
    open_page_fixture,
    tid,
    wait_output_complete,
)
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.wsclient import stored_log

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

DOCS_SCREENSHOTS = SCREENSHOTS  # test-artifacts/screenshots; docs/screenshots holds copies


def _node(node_id: str, component: str, x: int, y: int, **params) -> dict:
    return {"id": node_id, "component": component, "params": params, "position": {"x": x, "y": y}}


def test_a_policy_set_in_the_panel_retries_and_takes_the_wired_error_port(
    open_page, workspace_a, erin_editor
):
    with FakeOpenAIServer(fail_status=503) as server:
        credential = flowgraphs.openai_credential(workspace_a, erin_editor, server.base_url)
        graph = {
            "nodes": [
                _node("chat_input_1", "io.chat_input", 0, 80),
                _node("model", "llm.openai_chat", 300, 80, credential=credential.pk, model="m"),
                _node("answer", "io.text_output", 640, 0),
            ],
            "edges": [
                {
                    "source": "chat_input_1",
                    "source_port": "text",
                    "target": "model",
                    "target_port": "prompt",
                },
                {
                    "source": "model",
                    "source_port": "text",
                    "target": "answer",
                    "target_port": "text",
                },
            ],
        }
        acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
        flow = flow_create(workspace=workspace_a, acting=acting, name="Flaky", graph=graph)
        editor = open_page(erin_editor)
        page = editor.page
        editor.goto(f"/w/acme/flows/{flow.pk}/")
        page.wait_for_selector(tid("node-model"))
        assert not page.locator(tid("out-model-error")).count()  # no error port yet

        drag_to_canvas(page, "io.text_output", 560, 420)  # becomes text_output_1
        page.wait_for_selector(tid("node-text_output_1"))
        page.locator(tid("node-model")).click()
        section = page.locator(tid("policy-section"))
        section.locator("[data-policy=retries]").fill("1")
        section.locator("[data-policy=backoff_seconds]").fill("0")
        section.locator("[data-policy=retry_on-timeout]").uncheck()
        section.locator("[data-policy=on_failure]").select_option("error_port")
        assert "take the error port" in page.locator(tid("policy-summary")).inner_text()

        # The error port appears on the node, distinct from its normal output, and wires.
        page.wait_for_selector(tid("out-model-error"))
        handle = page.locator(tid("out-model-error"))
        assert "error-handle" in (handle.get_attribute("class") or "")
        assert "error-handle" not in (page.locator(tid("out-model-text")).get_attribute("class"))
        drag_connection(page, "out-model-error", "in-text_output_1-text")
        page.wait_for_selector(
            ".react-flow__edge[data-id='model:error->text_output_1:text']", state="attached"
        )
        page.locator(tid("node-model")).click()
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOTS / "node-policy.png"))

        page.click(tid("save"))
        page.wait_for_selector(f"{tid('version')}:has-text('v2')")
        saved = FlowVersion.objects.get(flow=flow, number=2).graph
        assert saved["nodes"][1]["policy"] == {
            "retries": 1,
            "backoff_seconds": 0,
            "retry_on": ["server_error", "rate_limited", "connection"],
            "on_failure": "error_port",
        }
        assert {
            "source": "model",
            "source_port": "error",
            "target": "text_output_1",
            "target_port": "text",
        } in saved["edges"]

        # Run it: two attempts (both answered 503), then the error path.
        page.click(tid("tab-run"))
        page.fill(tid("run-input-chat_input_1"), "hello?")
        page.click(tid("run-button"))
        page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
        assert page.locator(tid("retry-model")).inner_text().strip() == (
            "↻ attempt 2 of 2 after 503"
        )
        assert "took its error port after 503" in page.locator(tid("took-model")).inner_text()
        assert page.locator(tid("node-answer")).get_attribute("data-status") == "skipped"
        assert page.locator(tid("node-text_output_1")).get_attribute("data-status") == "done"
        requests = sum(path.endswith("/chat/completions") for path in server.paths)
    run = latest_run(workspace_a)
    assert run.status == RunStatus.SUCCEEDED and requests == 2
    assert [e["event"] for e in stored_log(str(run.pk)) if e["node_id"] == "model"] == [
        "node_started",
        "node_retry",
        "node_finished",
    ]
    assert '"code": "server_error"' in run.outputs["text_output_1"]
    assert editor.console_errors == []


def test_a_node_pinned_in_the_panel_keeps_its_output_while_what_follows_changes(
    open_page, workspace_a, erin_editor
):
    flow = demo_flow(workspace_a, erin_editor, reply="the first answer", delay_ms=0)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    page.locator(tid("node-demo_1")).click()
    page.wait_for_selector(tid("pin-unavailable"))  # nothing recorded yet

    def run_once() -> str:
        page.click(tid("tab-run"))
        page.fill(tid("run-input-chat_input_1"), "hi")
        shown = page.locator(tid("run-id"))
        before = shown.inner_text() if shown.count() else ""
        page.click(tid("run-button"))
        # The new run's status, not the one before it still on the panel.
        page.wait_for_function(
            "([sel, before]) => (document.querySelector(sel)?.textContent || '') !== before",
            arg=[tid("run-id"), before],
        )
        page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
        return str(latest_run(workspace_a).pk)

    first = run_once()
    page.locator(tid("node-demo_1")).click()
    page.click(tid("tab-node"))
    page.click(tid("pin"))
    assert first[:8] in page.locator(tid("pin-state")).inner_text()
    page.wait_for_selector(tid("pin-badge-demo_1"))
    page.fill("[data-param=reply]", "a second answer")  # the model would now say this

    second = run_once()
    assert second != first
    page.wait_for_selector(tid("pinned-demo_1"))
    assert first[:8] in page.locator(tid("pinned-demo_1")).inner_text()
    assert wait_output_complete(page, "text_output_1") == "the first answer"
    page.screenshot(path=str(DOCS_SCREENSHOTS / "node-pinned-run.png"))
    model = [e for e in stored_log(second) if e["node_id"] == "demo_1"]
    assert [(e["event"], e.get("pinned_from")) for e in model] == [("node_finished", first)]

    # The run of the changed canvas was kept as a draft version (v2): this is v3.
    page.click(tid("save"))
    page.wait_for_selector(f"{tid('version')}:has-text('v3')")
    saved = FlowVersion.objects.get(flow=flow, number=3)
    assert not saved.is_draft and saved.graph["nodes"][1]["pinned"] == {"run": first}

    page.locator(tid("node-demo_1")).click()
    page.click(tid("tab-node"))
    page.click(tid("unpin"))
    assert not page.locator(tid("pin-badge-demo_1")).count()
    run_once()
    assert wait_output_complete(page, "text_output_1") == "a second answer"
    assert editor.console_errors == []
