"""An iteration in a real browser against the live stack: the flow's editor shows the
Iteration node's body flow in its picker, a run over twelve items shows "12 of 12" on the
node, the items' steps are hidden until asked for, and the results come in the items'
order. Screenshot: test-artifacts/screenshots/iteration.png."""

from __future__ import annotations

import json

import pytest

from tests.browser import SCREENSHOTS, browser_fixture, open_page_fixture, tid  # noqa: F401
from tests.test_runs_iteration import _echo_body, _parent

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def test_an_iteration_runs_its_items_and_shows_its_progress(
    open_page, live_stack, workspace_a, erin_editor
):
    body = _echo_body(workspace_a, erin_editor)
    parent = _parent(workspace_a, erin_editor, body, concurrency=3)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{parent.pk}/")
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    page.click(tid("node-loop"))
    page.wait_for_selector(tid("subflow-picker"))
    # The picker shows the body flow once the workspace's flows have loaded.
    page.wait_for_function(
        "(sel) => document.querySelector(sel)?.selectedOptions[0]?.textContent === 'Body'",
        arg=tid("subflow-flow"),
    )
    page.wait_for_selector(f"{tid('subflow-ports')}:has-text('Inputs: item')")

    items = [f"问题 {i}" for i in range(12)]
    page.click(tid("tab-run"))
    page.fill(tid("run-input-input"), json.dumps(items, ensure_ascii=False))
    page.click(tid("run-button"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
    assert page.locator(tid("progress-loop")).inner_text().startswith("12 of 12")
    assert page.locator(tid("run-node-loop.0.model")).count() == 0  # items' steps hidden
    page.click(f"{tid('show-item-steps')} input")
    page.wait_for_selector(tid("run-node-loop.11.model"))
    page.click(tid("show-item-steps"))
    results = "\n\n".join(f"(demo model) You said: {item}" for item in items)
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel)?.innerText.trim() === text",
        arg=[tid("final-out"), results],
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "iteration.png"))
    assert editor.console_errors == []
