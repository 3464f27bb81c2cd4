"""The editor and the run view in a real browser against the whole live stack.

Chromium (Debian's, driven by Playwright) talks to real Daphne, a real Celery worker, Redis
and the test database: nothing on the server side is mocked. Screenshots of the editor
mid-run are written to test-artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import re
import time

import pytest

from runs.models import Run, RunEvent, RunStatus
from tests.browser import (  # noqa: F401 (fixtures)
    REPLY,
    SCREENSHOTS,
    assert_log_has_no_gaps,
    browser_fixture,
    demo_flow,
    drag_connection,
    drag_to_canvas,
    latest_run,
    logged_tokens,
    node_ids,
    open_page_fixture,
    tid,
    wait_output_complete,
    watch_stream,
)
from tests.conftest import make_user

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def test_build_by_drag_and_drop_save_and_run_streams_progressively(
    open_page, workspace_a, erin_editor, bob_viewer
):
    editor = open_page(erin_editor)
    teammate = open_page(bob_viewer)
    page = editor.page

    # A new flow from the flow list opens the editor.
    editor.goto("/w/acme/flows/")
    page.fill("#new-flow-name", "Streaming demo")
    page.click("button:has-text('New flow')")
    page.wait_for_url(re.compile(r"/w/acme/flows/\d+/$"))
    page.wait_for_selector(tid("palette-llm.demo"))

    # Three nodes by real drag and drop from the palette (and a fourth to be deleted).
    drag_to_canvas(page, "io.chat_input", 40, 80)
    drag_to_canvas(page, "llm.demo", 290, 200)
    drag_to_canvas(page, "io.text_output", 520, 80)
    drag_to_canvas(page, "retriever.bm25", 290, 420)
    assert sorted(node_ids(page)) == ["bm25_1", "chat_input_1", "demo_1", "text_output_1"]

    # A text output cannot feed a documents input: refused while dragging.
    drag_connection(page, "out-chat_input_1-text", "in-bm25_1-documents")
    assert page.locator(".react-flow__edge").count() == 0
    # Nor can a node feed itself.
    drag_connection(page, "out-demo_1-text", "in-demo_1-prompt")
    assert page.locator(".react-flow__edge").count() == 0
    # Compatible ports connect; undo takes the edge back.
    drag_connection(page, "out-chat_input_1-text", "in-bm25_1-query")
    assert page.locator(".react-flow__edge").count() == 1
    page.locator(".react-flow__pane").click(position={"x": 300, "y": 30})
    page.keyboard.press("Control+z")
    assert page.locator(".react-flow__edge").count() == 0
    # Delete the fourth node with the keyboard.
    page.locator(tid("node-bm25_1")).click()
    page.keyboard.press("Delete")
    assert sorted(node_ids(page)) == ["chat_input_1", "demo_1", "text_output_1"]

    drag_connection(page, "out-chat_input_1-text", "in-demo_1-prompt")
    drag_connection(page, "out-demo_1-text", "in-text_output_1-text")
    assert page.locator(".react-flow__edge").count() == 2

    # Parameters from the component's JSON Schema.
    page.locator(tid("node-demo_1")).click()
    page.fill("[data-param=reply]", REPLY)
    page.fill("[data-param=delay_ms]", "120")
    assert page.locator(tid("unsaved")).is_visible()

    # Save as a new version with a note.
    page.fill(tid("version-note"), "first cut")
    page.click(tid("save"))
    page.wait_for_selector(f"{tid('version')}:has-text('v1')")
    assert not page.locator(tid("unsaved")).count()

    # Run on llm.demo and watch the tokens arrive.
    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "Hello?")
    page.click(tid("run-button"))
    page.wait_for_selector(tid("output-demo_1"))
    run = latest_run(workspace_a)

    # A teammate who opens the running run sees it live, from the start.
    teammate.goto(f"/w/acme/runs/{run.pk}/")

    seen = watch_stream(page, "demo_1", screenshot=SCREENSHOTS / "editor-mid-run.png")
    page.screenshot(path=str(SCREENSHOTS / "editor-after-run.png"))
    assert len(seen) >= 3, f"tokens did not arrive progressively: {seen}"
    assert all(REPLY.startswith(text) for text in seen), seen

    final = wait_output_complete(page, "demo_1")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert final == logged_tokens(str(run.pk), "demo_1").strip() == REPLY
    assert_log_has_no_gaps(str(run.pk))
    assert page.locator(tid("node-status-demo_1")).inner_text().startswith("done")
    assert REPLY in page.locator(tid("final-outputs")).inner_text()

    assert wait_output_complete(teammate.page, "demo_1") == REPLY
    teammate.page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
    teammate.page.screenshot(path=str(SCREENSHOTS / "run-page-finished.png"))
    assert editor.console_errors == []
    assert teammate.console_errors == []


def test_socket_cut_mid_stream_reconnects_and_resumes_without_gap_or_duplicate(
    open_page, live_stack, workspace_a, erin_editor
):
    flow = demo_flow(workspace_a, erin_editor, reply=REPLY, delay_ms=100)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "Hello?")
    page.click(tid("run-button"))
    streamed = "(n) => (document.querySelector(\"[data-testid='output-demo_1']\")?.textContent || '').length > n"
    page.wait_for_function(streamed, arg=20)

    # 1. Closed from the page: the client notices, reconnects and resumes.
    page.evaluate("() => window.__sockets.forEach(s => s.close())")
    page.wait_for_function("() => window.__connStates.slice(-2).join() === 'reconnecting,open'")
    page.wait_for_function(streamed, arg=120)

    # 2. Cut on the server side: Daphne dies mid-stream and comes back a moment later;
    # the worker keeps logging events meanwhile, which the resume must deliver.
    run = latest_run(workspace_a)
    live_stack.kill("daphne")
    try:
        logged_at_cut = RunEvent.objects.filter(run=run).count()
        page.wait_for_selector(f"{tid('connection')}[data-state='reconnecting']")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "editor-reconnecting.png"))
        # Daphne stays down until the worker has logged more of the run (events no client
        # got live), instead of for a second: the resume must deliver them.
        deadline = time.monotonic() + 30
        while RunEvent.objects.filter(run=run).count() < logged_at_cut + 3:
            assert time.monotonic() < deadline, "the worker logged nothing while Daphne was down"
            time.sleep(0.05)
    finally:
        live_stack.start_daphne()

    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
    final = wait_output_complete(page, "demo_1")
    run = latest_run(workspace_a)
    assert final == logged_tokens(str(run.pk), "demo_1").strip() == REPLY
    assert page.locator(tid("connection")).get_attribute("data-state") == "open"
    states = page.evaluate("() => window.__connStates")
    assert states.count("reconnecting") >= 2, states
    assert page.evaluate("() => window.__sockets.length") >= 3
    # Only the refused reconnect attempts while Daphne was down may complain.
    assert [e for e in editor.console_errors if "WebSocket" not in e] == []


def test_viewer_gets_a_read_only_canvas_and_cannot_run(
    open_page, workspace_a, erin_editor, bob_viewer
):
    flow = demo_flow(workspace_a, erin_editor, reply="hi", delay_ms=0)
    viewer = open_page(bob_viewer)
    page = viewer.page
    viewer.goto(f"/w/acme/flows/{flow.pk}/")
    page.wait_for_selector(tid("node-demo_1"))
    assert page.locator(tid("read-only")).is_visible()
    assert page.locator(tid("save")).count() == 0
    assert page.locator(tid("palette-llm.demo")).is_disabled()

    # Delete does not delete; dragging a node does not move it (the canvas pans instead).
    page.locator(tid("node-demo_1")).click()
    page.keyboard.press("Delete")
    assert sorted(node_ids(page)) == ["chat_input_1", "demo_1", "text_output_1"]
    node = page.locator(".react-flow__node[data-id='demo_1']")
    position = node.evaluate("el => el.style.transform")
    box = node.bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 150, steps=8)
    page.mouse.up()
    assert node.evaluate("el => el.style.transform") == position
    assert page.locator("[data-param=reply]").is_disabled()

    page.click(tid("tab-run"))
    assert page.locator(tid("run-button")).is_disabled()
    # Going around the disabled button, straight through the page's own WebSocket (its
    # session, its cookie): refused.
    outcome = page.evaluate(
        """(flow) => new Promise((resolve) => {
            const ws = window.__sockets.filter((s) => s.readyState === WebSocket.OPEN).pop();
            const requestId = "around-the-button";
            ws.addEventListener("message", (message) => {
              const frame = JSON.parse(message.data);
              if (frame.request_id !== requestId) return;
              if (frame.event === "accepted") resolve("accepted");
              if (frame.event === "rejected") resolve(frame.code);
            });
            ws.send(JSON.stringify(
              {action: "run", flow, inputs: {input: "hi"}, request_id: requestId}));
        })""",
        flow.pk,
    )
    assert outcome == "forbidden"
    assert Run.objects.filter(workspace=workspace_a).count() == 0
    assert viewer.console_errors == []


def test_non_member_gets_404_for_the_editor_and_the_run_pages(open_page, workspace_a, erin_editor):
    flow = demo_flow(workspace_a, erin_editor, reply="hi", delay_ms=0)
    outsider = make_user("oscar@example.com", name="Oscar")
    page = open_page(outsider)
    for path in ["/w/acme/flows/", f"/w/acme/flows/{flow.pk}/", "/w/acme/runs/"]:
        response = page.goto(path)
        assert response.status == 404, path
        assert "Streaming" not in page.page.content()
