"""The builder's smaller promises in a real browser (issue 14): the answer pinned first and a
100k-character answer kept light, notes and groups saved in the graph, dark mode, a re-run
with a header of its own, and the small defects (an empty flow refused, no stale "queued",
the selected node's parameters back on a click, secondary buttons that look secondary,
port-type labels with AA contrast, "Offline" when the browser is)."""

from __future__ import annotations

import pytest

from accounts.models import Membership
from flows import services
from flows.builder import validate_graph
from flows.models import FlowDraft
from runs.models import Run, RunStatus
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    demo_flow,
    latest_run,
    open_page_fixture,
    tid,
)
from tests.test_browser_editor_features import finished_run

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

# 99,984 characters: as long as the demo model's reply may be.
LONG_REPLY = "".join(f"line {i:05d} of a very long answer, kept readable\n" for i in range(2083))


def acting(workspace, user) -> Membership:
    return Membership.objects.get(workspace=workspace, user=user)


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name))


def open_editor(open_page, user, flow):
    editor = open_page(user)
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    editor.page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    return editor, editor.page


def test_the_answer_is_pinned_first_and_a_100k_answer_stays_light(open_page, workspace_a, erin_editor):
    assert 99_000 < len(LONG_REPLY) <= 100_000
    flow = demo_flow(workspace_a, erin_editor, reply=LONG_REPLY, delay_ms=0)
    editor, page = open_editor(open_page, erin_editor, flow)
    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "Tell me everything")
    page.click(tid("run-button"))
    answer = page.locator(tid("answer"))
    answer.wait_for()
    # The answer comes before the steps in the panel.
    order = page.evaluate(
        """() => {
            const a = document.querySelector("[data-testid='answer']");
            const d = document.querySelector("[data-testid='run-details']");
            return !!(a && d && (a.compareDocumentPosition(d) & Node.DOCUMENT_POSITION_FOLLOWING));
        }"""
    )
    assert order
    shot(page, "builder-answer-pinned.png")
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=90_000)
    page.wait_for_selector(f"{tid('output-demo_1')}[data-complete='true']", timeout=60_000)
    # Kept light: the text is in blocks the browser may skip while off screen.
    blocks = page.locator(f"{tid('answer')} .text-block").count()
    assert blocks >= 20, blocks
    # (text_content: the browser does not lay out the blocks off screen, innerText skips them)
    text = page.locator(tid("answer-text_output_1")).text_content()
    assert "line 02082 of a very long answer" in text and "line 00000" in text
    # Scrolled to its end while it grew.
    page.wait_for_function(
        """() => { const b = document.querySelector('.answer-box');
                  return b.scrollHeight - b.scrollTop - b.clientHeight < 60; }"""
    )
    assert page.locator(f"{tid('answer')} .text-block").last.is_visible()
    # The steps fold away.
    page.click(f"{tid('run-details')} > summary")
    assert not page.locator(tid("output-demo_1")).is_visible()
    assert latest_run(workspace_a).status == RunStatus.SUCCEEDED
    assert editor.console_errors == []


def test_notes_and_groups_are_drawn_saved_in_the_graph_and_ignored_by_runs(
    open_page, workspace_a, erin_editor
):
    flow = demo_flow(workspace_a, erin_editor, reply="hi", delay_ms=0)
    editor, page = open_editor(open_page, erin_editor, flow)
    page.click(tid("add-note"))
    page.locator(".note textarea").fill("Asks the demo model; swap in a real one later.")
    # A group around two selected nodes.
    page.click(tid("node-chat_input_1"))
    page.keyboard.down("Control")
    page.click(tid("node-demo_1"))
    page.keyboard.up("Control")
    page.click(tid("add-group"))
    page.locator(".group-frame input").fill("Model step")
    page.locator(".react-flow__pane").click(position={"x": 30, "y": 30})
    page.wait_for_selector(f"{tid('draft-state')}[data-state='saved']")
    graph = FlowDraft.objects.get(flow=flow).graph
    kinds = {a["kind"]: a for a in graph["annotations"]}
    group = kinds["group"]
    xs = {n["id"]: n["position"]["x"] for n in graph["nodes"]}
    assert group["position"]["x"] < xs["chat_input_1"] < xs["demo_1"] < group["position"]["x"] + group["size"]["width"]
    assert kinds["note"]["text"] == "Asks the demo model; swap in a real one later."
    assert kinds["group"]["title"] == "Model step"
    assert validate_graph(graph, workspace_a) == []
    shot(page, "builder-notes-groups.png")

    # Moving the frame moves what it encloses.
    frame = page.locator(".react-flow__node-frame").first
    inside = page.locator(".react-flow__node[data-id='demo_1']")
    before = inside.evaluate("e => e.style.transform")
    box = frame.bounding_box()
    # Grab the frame in its margin, left of the nodes it encloses (not on its title).
    page.mouse.move(box["x"] + 10, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 70, box["y"] + box["height"] / 2 + 60, steps=8)
    page.mouse.up()
    assert inside.evaluate("e => e.style.transform") != before

    # A run of the draft (with its annotations) runs as before.
    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "hello")
    page.click(tid("run-button"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
    assert latest_run(workspace_a).status == RunStatus.SUCCEEDED
    assert editor.console_errors == []


def test_dark_mode_follows_the_system_and_the_toggle(open_page, workspace_a, erin_editor):
    flow = demo_flow(workspace_a, erin_editor, reply="hi", delay_ms=0)
    editor = open_page(erin_editor)
    page = editor.page
    page.emulate_media(color_scheme="dark")
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    page.wait_for_selector(tid("node-demo_1"))

    def background() -> str:
        return page.evaluate("() => getComputedStyle(document.body).backgroundColor")

    def dark(colour: str) -> bool:
        r, g, b = (int(x) for x in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3])
        return r + g + b < 200

    assert dark(background())  # the system says dark
    assert page.locator(".react-flow.dark").count() == 1
    card = page.evaluate(
        "() => getComputedStyle(document.querySelector(\"[data-testid='node-demo_1']\")).backgroundColor"
    )
    assert dark(card)
    shot(page, "builder-dark.png")
    toggle = page.locator(tid("theme-toggle"))
    assert toggle.inner_text() == "Theme: system"
    toggle.click()  # -> light
    assert toggle.inner_text() == "Theme: light" and not dark(background())
    page.wait_for_selector(".react-flow.light")
    toggle.click()  # -> dark, remembered
    page.reload()
    page.wait_for_selector(tid("node-demo_1"))
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    page.emulate_media(color_scheme="light")
    assert dark(background())  # the member's choice beats the system's
    editor.goto("/w/acme/flows/")
    assert dark(background())  # Django pages too
    assert editor.console_errors == []


def test_a_rerun_on_the_run_page_gets_its_own_header(open_page, workspace_a, erin_editor):
    flow = demo_flow(workspace_a, erin_editor, reply="again and again", delay_ms=0)
    run = finished_run(workspace_a, erin_editor, flow)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/runs/{run.pk}/")
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
    assert page.locator(tid("run-id")).inner_text() == str(run.pk)[:8]
    page.click(tid("rerun-button"))
    page.wait_for_selector(tid("rerun-banner"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
    rerun = Run.objects.get(rerun_of=run)
    assert page.locator(tid("run-id")).inner_text() == str(rerun.pk)[:8]
    banner = page.locator(tid("rerun-banner")).inner_text()
    assert str(rerun.pk)[:8] in banner and str(run.pk)[:8] in banner
    assert page.locator(".run-meta[data-superseded]").count() == 1
    assert page.title().startswith(f"Re-run {str(rerun.pk)[:8]}")
    shot(page, "builder-rerun-header.png")
    assert editor.console_errors == []


def _contrast(foreground: str, background: str) -> float:
    def channels(colour: str) -> list[float]:
        values = colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3]
        out = []
        for v in values:
            c = int(float(v)) / 255
            out.append(c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
        return out

    def luminance(colour: str) -> float:
        r, g, b = channels(colour)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, darker = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (darker + 0.05)


def test_small_defects_stay_fixed(open_page, browser, workspace_a, erin_editor):
    empty = services.flow_create(workspace=workspace_a, acting=acting(workspace_a, erin_editor), name="Empty")
    editor, page = open_editor(open_page, erin_editor, empty)
    # An empty flow does not "run": refused, with a reason.
    page.click(tid("tab-run"))
    page.click(tid("run-button"))
    page.wait_for_selector(tid("run-rejected"))
    assert "empty" in page.locator(tid("graph-problems")).inner_text()
    assert Run.objects.count() == 0

    # A refused run leaves no node "queued".
    broken = services.flow_create(workspace=workspace_a, acting=acting(workspace_a, erin_editor), name="Broken")
    services.draft_save(
        workspace=workspace_a,
        acting=acting(workspace_a, erin_editor),
        flow=broken,
        graph={
            "nodes": [
                {"id": "chat_input_1", "component": "io.chat_input", "params": {}, "position": {"x": 0, "y": 0}},
                {"id": "demo_1", "component": "llm.demo", "params": {}, "position": {"x": 300, "y": 0}},
            ],
            "edges": [],
        },
        base_revision=0,
    )
    editor.goto(f"/w/acme/flows/{broken.pk}/")
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "hi")
    page.click(tid("run-button"))
    page.wait_for_selector(tid("run-rejected"))
    assert page.locator("[data-status='queued']").count() == 0
    assert page.locator(".node-status.st-queued").count() == 0

    # Clicking the node that is already selected brings its parameters back.
    page.click(tid("node-demo_1"))
    page.wait_for_selector("[data-param=reply]")
    page.click(tid("tab-run"))
    assert page.locator("[data-param=reply]").count() == 0
    page.click(tid("node-demo_1"))
    page.wait_for_selector("[data-param=reply]")
    assert page.locator(tid("tab-node")).get_attribute("aria-selected") == "true"
    # The problem reads as a sentence, not a field path.
    problems = page.locator(tid("node-problems")).inner_text()
    assert "Input “Prompt” is not connected." in problems and "ports." not in problems

    # Secondary buttons look secondary (outlined), on the page and in the island.
    primary = page.locator(tid("save")).evaluate("e => getComputedStyle(e).backgroundColor")
    for selector in (tid("undo"), tid("cancel-button")):
        assert page.locator(selector).evaluate("e => getComputedStyle(e).backgroundColor") != primary
    editor.goto("/w/acme/flows/")
    search = page.locator("form.search button.secondary")
    new_flow = page.locator("button:has-text('New flow')")
    assert search.evaluate("e => getComputedStyle(e).backgroundColor") != new_flow.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )

    # Port-type labels have AA contrast on their card.
    editor.goto(f"/w/acme/flows/{broken.pk}/")
    page.wait_for_selector(".port-type")
    colour = page.locator(".port-type").first.evaluate("e => getComputedStyle(e).color")
    card = page.locator(".node-card").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert _contrast(colour, card) >= 4.5, (colour, card)

    # Offline says so, whatever the socket last knew.
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    editor.context.set_offline(True)
    page.wait_for_selector(f"{tid('connection')}[data-state='offline']")
    assert "Offline" in page.locator(tid("connection")).inner_text()
    editor.context.set_offline(False)
    page.wait_for_selector(f"{tid('connection')}:not([data-state='offline'])")
    assert [e for e in editor.console_errors if "WebSocket" not in e and "ERR_INTERNET" not in e] == []
