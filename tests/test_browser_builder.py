"""Building flows in a real browser (issue 14): drafts that survive a reload and a closed
tab, fields that stay empty when cleared, wiring close handles, refused connections that
say why, the router's rule form (a Chinese keyword routing a run), flow files, every
starter template running, and the canvas at 1280x800.

Chromium (Debian's, through Playwright, real mouse and keyboard) against the live stack:
Daphne, a Celery worker, Redis and the test database. Screenshots go to
test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from accounts.models import Membership
from flows import services
from flows.models import Flow, FlowDraft, FlowVersion
from flows.starters import STARTERS
from runs.models import Run, RunEvent, RunStatus
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    drag_connection,
    drag_to_canvas,
    latest_run,
    node_ids,
    open_page_fixture,
    tid,
)

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def acting(workspace, user) -> Membership:
    return Membership.objects.get(workspace=workspace, user=user)


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name))


def wait_until(predicate, what: str, timeout: float = 30) -> None:
    """Wait for a state of the database (polling), not for a time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def node(node_id: str, component: str, params: dict, x: int, y: int) -> dict:
    return {"id": node_id, "component": component, "params": params, "position": {"x": x, "y": y}}


def open_editor(open_page, user, flow) -> tuple:
    editor = open_page(user)
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    editor.page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    return editor, editor.page


def draft_nodes(flow) -> list[str]:
    draft = FlowDraft.objects.filter(flow=flow).first()
    return sorted(n["id"] for n in draft.graph["nodes"]) if draft else []


# --- drafts -------------------------------------------------------------------------------------
def test_an_incomplete_flow_is_autosaved_and_restored_after_a_reload_and_a_closed_tab(
    open_page, workspace_a, erin_editor
):
    flow = services.flow_create(workspace=workspace_a, acting=acting(workspace_a, erin_editor), name="WIP")
    editor, page = open_editor(open_page, erin_editor, flow)
    page.wait_for_selector(tid("palette-llm.demo"))
    drag_to_canvas(page, "llm.demo", 420, 200)
    # Incomplete (its prompt is fed by nothing), and kept anyway: a draft is not a version.
    page.wait_for_selector(tid("problems-demo_1"))
    page.wait_for_selector(f"{tid('draft-state')}[data-state='saved']")
    assert draft_nodes(flow) == ["demo_1"]
    assert not FlowVersion.objects.filter(flow=flow).exists()

    page.reload()
    page.wait_for_selector(tid("node-demo_1"))
    assert node_ids(page) == ["demo_1"]
    assert "Restored your draft" in page.locator(tid("save-state")).inner_text()
    shot(page, "builder-draft-restored.png")

    # A change, and the tab is closed before the autosave could run: nothing is lost.
    drag_to_canvas(page, "io.chat_input", 120, 200)
    page.wait_for_selector(tid("node-chat_input_1"))
    page.close()  # no beforeunload dialog: pagehide sends the draft (keepalive)
    again = open_page(erin_editor)
    again.goto(f"/w/acme/flows/{flow.pk}/")
    again.page.wait_for_selector(tid("node-chat_input_1"))
    assert sorted(node_ids(again.page)) == ["chat_input_1", "demo_1"]
    wait_until(lambda: draft_nodes(flow) == ["chat_input_1", "demo_1"], "the draft reached the server")
    assert again.console_errors == []


def test_a_draft_saved_by_another_editor_meanwhile_offers_theirs_or_mine(
    open_page, workspace_a, erin_editor, carol_admin
):
    flow = services.flow_create(workspace=workspace_a, acting=acting(workspace_a, erin_editor), name="Shared")
    editor, page = open_editor(open_page, erin_editor, flow)
    page.wait_for_selector(tid("palette-llm.demo"))
    drag_to_canvas(page, "llm.demo", 420, 200)
    page.wait_for_selector(f"{tid('draft-state')}[data-state='saved']")
    # Carol saves the draft from elsewhere (the API), on top of Erin's revision.
    theirs = {"nodes": [node("theirs_1", "io.chat_input", {}, 0, 0)], "edges": []}
    services.draft_save(
        workspace=workspace_a,
        acting=acting(workspace_a, carol_admin),
        flow=flow,
        graph=theirs,
        base_revision=FlowDraft.objects.get(flow=flow).revision,
    )
    drag_to_canvas(page, "io.text_output", 700, 200)
    page.wait_for_selector(tid("draft-conflict"))
    assert "carol@example.com" in page.locator(tid("draft-conflict")).inner_text()
    shot(page, "builder-draft-conflict.png")
    page.click(tid("conflict-theirs"))
    page.wait_for_selector(tid("node-theirs_1"))
    assert node_ids(page) == ["theirs_1"]
    # Their draft stays; the editor goes on from their revision.
    drag_to_canvas(page, "llm.demo", 420, 200)
    page.wait_for_selector(f"{tid('draft-state')}[data-state='saved']")
    assert draft_nodes(flow) == ["demo_1", "theirs_1"]
    assert [e for e in editor.console_errors if "409" not in e] == []


# --- fields -------------------------------------------------------------------------------------
def test_clearing_a_field_and_typing_keeps_exactly_what_was_typed(open_page, workspace_a, erin_editor):
    flow = services.flow_create(workspace=workspace_a, acting=acting(workspace_a, erin_editor), name="Tpl")
    editor, page = open_editor(open_page, erin_editor, flow)
    page.wait_for_selector(tid("palette-prompt.template"))
    page.click(tid("palette-prompt.template"))
    page.wait_for_selector(tid("in-template_1-input"))  # the default template is "{input}"
    field = page.locator("[data-param=template]")
    field.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Backspace")
    assert field.input_value() == ""  # empty stays empty: no default snaps back
    page.keyboard.type("Hi {name}, welcome")
    assert field.input_value() == "Hi {name}, welcome"
    page.wait_for_selector(tid("in-template_1-name"))
    assert page.locator(tid("in-template_1-input")).count() == 0  # no phantom port
    assert page.locator(tid("vars-template")).inner_text() == "Variables: name"
    page.locator(".react-flow__pane").click(position={"x": 40, "y": 40})
    page.wait_for_selector(f"{tid('draft-state')}[data-state='saved']")
    draft = FlowDraft.objects.get(flow=flow)
    assert draft.graph["nodes"][0]["params"]["template"] == "Hi {name}, welcome"
    page.click(tid("node-template_1"))
    shot(page, "builder-cleared-field.png")

    # Cleared entirely, it stays empty (and the problem says so in a sentence).
    page.locator("[data-param=template]").fill("")
    page.wait_for_selector(f"{tid('problems-template_1')}:has-text('can\\'t be empty')")
    assert page.locator("[data-param=template]").input_value() == ""
    assert "params." not in page.locator(tid("node-problems")).inner_text()
    wait_until(lambda: FlowDraft.objects.get(flow=flow).graph["nodes"][0]["params"]["template"] == "", "the cleared template reached the draft")
    assert editor.console_errors == []


def test_a_huge_paste_is_cut_with_a_message_and_typing_goes_on(open_page, workspace_a, erin_editor):
    graph = {"nodes": [node("demo_1", "llm.demo", {"reply": "", "delay_ms": 0}, 0, 0)], "edges": []}
    flow = services.flow_create(workspace=workspace_a, acting=acting(workspace_a, erin_editor), name="Paste")
    services.draft_save(
        workspace=workspace_a, acting=acting(workspace_a, erin_editor), flow=flow, graph=graph, base_revision=0
    )
    editor, page = open_editor(open_page, erin_editor, flow)
    page.click(tid("node-demo_1"))
    field = page.locator("[data-param=reply]")
    field.click()
    page.evaluate(
        """() => {
            const el = document.querySelector("[data-param=reply]");
            const data = new DataTransfer();
            data.setData("text/plain", "x".repeat(225000));
            el.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true}));
        }"""
    )
    cut = page.locator(tid("cut-reply"))
    cut.wait_for()
    assert "225,000" in cut.inner_text() and "100,000" in cut.inner_text()
    assert len(field.input_value()) == 100_000
    # The field is full: typing more is refused by the limit; deleting and typing work.
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.type("ok")
    assert field.input_value().endswith("xxok") and len(field.input_value()) == 100_000
    page.locator(".react-flow__pane").click(position={"x": 40, "y": 40})
    wait_until(
        lambda: FlowDraft.objects.get(flow=flow).graph["nodes"][0]["params"]["reply"].endswith("ok"),
        "the long reply reached the draft",
    )
    assert editor.console_errors == []


# --- wiring -------------------------------------------------------------------------------------
def test_wiring_two_nodes_whose_handles_are_close_without_moving_a_node(
    open_page, workspace_a, erin_editor
):
    # Card width is 216: the second card starts 12 px after the first one ends.
    graph = {
        "nodes": [
            node("chat_input_1", "io.chat_input", {}, 0, 0),
            node("demo_1", "llm.demo", {"reply": "hi", "delay_ms": 0}, 228, 0),
        ],
        "edges": [],
    }
    flow = services.flow_create(workspace=workspace_a, acting=acting(workspace_a, erin_editor), name="Close")
    services.draft_save(
        workspace=workspace_a, acting=acting(workspace_a, erin_editor), flow=flow, graph=graph, base_revision=0
    )
    editor, page = open_editor(open_page, erin_editor, flow)
    page.wait_for_selector(tid("out-chat_input_1-text"))
    before = {n: page.locator(f".react-flow__node[data-id='{n}']").evaluate("e => e.style.transform") for n in ("chat_input_1", "demo_1")}
    out_box = page.locator(tid("out-chat_input_1-text")).bounding_box()
    in_box = page.locator(tid("in-demo_1-prompt")).bounding_box()
    assert in_box["x"] - (out_box["x"] + out_box["width"]) < 60  # close indeed
    # The handles are inside their cards.
    for handle, card in (("out-chat_input_1-text", "node-chat_input_1"), ("in-demo_1-prompt", "node-demo_1")):
        h, c = page.locator(tid(handle)).bounding_box(), page.locator(tid(card)).bounding_box()
        assert c["x"] <= h["x"] and h["x"] + h["width"] <= c["x"] + c["width"], (handle, h, c)
    drag_connection(page, "out-chat_input_1-text", "in-demo_1-prompt")
    page.wait_for_selector(".react-flow__edge", state="attached")
    assert page.locator(".react-flow__edge").count() == 1
    after = {n: page.locator(f".react-flow__node[data-id='{n}']").evaluate("e => e.style.transform") for n in ("chat_input_1", "demo_1")}
    assert after == before
    shot(page, "builder-close-handles.png")
    page.wait_for_selector(f"{tid('draft-state')}[data-state='saved']")
    assert FlowDraft.objects.get(flow=flow).graph["edges"] == [
        {"source": "chat_input_1", "source_port": "text", "target": "demo_1", "target_port": "prompt"}
    ]
    assert editor.console_errors == []


def test_a_mismatched_connection_explains_itself_and_the_keyboard_can_connect(
    open_page, workspace_a, erin_editor
):
    graph = {
        "nodes": [
            node("demo_1", "llm.demo", {"reply": "hi", "delay_ms": 0}, 0, 0),
            node("bm25_1", "retriever.bm25", {}, 320, 0),
        ],
        "edges": [],
    }
    flow = services.flow_create(workspace=workspace_a, acting=acting(workspace_a, erin_editor), name="Types")
    services.draft_save(
        workspace=workspace_a, acting=acting(workspace_a, erin_editor), flow=flow, graph=graph, base_revision=0
    )
    editor, page = open_editor(open_page, erin_editor, flow)
    page.wait_for_selector(tid("in-bm25_1-documents"))
    drag_connection(page, "out-demo_1-text", "in-bm25_1-documents")
    message = page.locator(tid("connect-error"))
    message.wait_for()
    assert message.inner_text() == "Can't connect Reply (text) to Documents (documents)."
    assert page.locator(".react-flow__edge").count() == 0
    shot(page, "builder-mismatch.png")

    # No mouse: select the node, press C, pick the port and the other end, Enter.
    page.click(tid("node-demo_1"))
    page.keyboard.press("c")
    dialog = page.locator(tid("connect-dialog"))
    dialog.wait_for()
    options = page.locator(f"{tid('connect-to')} option").all_inner_texts()
    assert options == ["BM25 retriever · bm25_1 · Query (any)"]  # documents is not offered
    page.locator(tid("connect-to")).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(".react-flow__edge", state="attached")
    assert page.locator(tid("connect-dialog")).count() == 0
    page.wait_for_selector(f"{tid('draft-state')}[data-state='saved']")
    assert FlowDraft.objects.get(flow=flow).graph["edges"] == [
        {"source": "demo_1", "source_port": "text", "target": "bm25_1", "target_port": "query"}
    ]
    assert editor.console_errors == []


# --- the router ---------------------------------------------------------------------------------
def test_router_rules_built_in_the_form_route_a_chinese_sentence(open_page, workspace_a, erin_editor):
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto("/w/acme/flows/")
    page.click(tid("use-template-support-bot"))
    page.wait_for_url(re.compile(r"/w/acme/flows/\d+/$"))
    page.wait_for_selector(tid("node-intent"))
    flow = Flow.objects.get(name="Customer-service bot")

    page.click(tid("node-intent"))
    page.wait_for_selector(tid("router-rules"))
    # Rebuild the rule: remove it, add one, name its output and give it a Chinese keyword.
    page.click("button[aria-label='Remove rule 1']")
    page.click(tid("router-add-rule"))
    page.fill(tid("router-rule-0-output"), "human")
    page.select_option(tid("router-rule-0-match"), "keyword")
    page.fill(tid("router-rule-0-pattern"), "人工, 客服")
    page.fill(tid("router-sample"), "我要人工客服")
    page.wait_for_selector(f"{tid('router-preview')}[data-output='human']")
    assert "rule 1 matched" in page.locator(tid("router-preview")).inner_text()
    page.fill(tid("router-sample"), "How do I reset my password?")
    page.wait_for_selector(f"{tid('router-preview')}[data-output='faq']")
    page.fill(tid("router-sample"), "我要人工客服")
    page.wait_for_selector(f"{tid('router-preview')}[data-output='human']")
    shot(page, "builder-router-form.png")
    page.wait_for_selector(f"{tid('draft-state')}[data-state='saved']")

    page.click(tid("tab-run"))
    page.fill(tid("run-input-question"), "您好，我要人工客服，谢谢")
    page.click(tid("run-button"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
    run = latest_run(workspace_a)
    assert run.status == RunStatus.SUCCEEDED and run.flow_version.is_draft
    assert run.flow_version.graph["nodes"][1]["params"]["rules"] == [
        {"output": "human", "match": "keyword", "pattern": "人工, 客服", "case_sensitive": False}
    ]
    finished = {
        e.node_id: e.payload.get("skipped", False)
        for e in RunEvent.objects.filter(run=run, event="node_finished")
    }
    assert finished["handoff_model"] is False and finished["answer_model"] is True
    page.wait_for_selector(f"{tid('answer-handoff')}")
    assert "passing you to a person" in page.locator(tid("answer")).inner_text()
    assert flow.pk == run.flow_id
    assert editor.console_errors == []


# --- flow files ---------------------------------------------------------------------------------
def test_an_exported_flow_imports_as_exactly_the_same_flow(open_page, workspace_a, erin_editor, tmp_path):
    from flows.transfer import flow_from_starter

    original = flow_from_starter(workspace=workspace_a, acting=acting(workspace_a, erin_editor), key="document-qa")
    graph = FlowVersion.objects.get(flow=original).graph
    assert graph.get("annotations"), "the template has a group frame: it must travel too"
    editor, page = open_editor(open_page, erin_editor, original)
    page.wait_for_selector(tid("group-group_retrieval"))
    with page.expect_download() as download:
        page.click(tid("export-file"))
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name == "document-q-a.flowdeck.json"
    exported = json.loads(path.read_text())
    assert exported["format"] == "flowdeck.flow" and exported["graph"] == graph

    editor.goto("/w/acme/flows/")
    page.set_input_files(tid("import-file"), str(path))
    page.click(tid("import-submit"))
    page.wait_for_url(re.compile(r"/w/acme/flows/\d+/$"))
    copy = Flow.objects.exclude(pk=original.pk).get(name=original.name)
    assert page.url.endswith(f"/flows/{copy.pk}/")
    assert FlowVersion.objects.get(flow=copy).graph == graph
    assert copy.description == original.description
    page.wait_for_selector(tid("group-group_retrieval"))
    assert "Imported as version 1" in page.content()
    shot(page, "builder-imported.png")
    assert editor.console_errors == []


# --- templates ----------------------------------------------------------------------------------
def test_each_template_opens_from_the_gallery_and_runs_to_success(open_page, workspace_a, erin_editor):
    editor = open_page(erin_editor)
    page = editor.page
    for key, starter in STARTERS.items():
        editor.goto("/w/acme/flows/")
        if key == "basic-prompting":
            shot(page, "builder-template-gallery.png")
        page.click(tid(f"use-template-{key}"))
        page.wait_for_url(re.compile(r"/w/acme/flows/\d+/$"))
        page.wait_for_selector(f"{tid('connection')}[data-state='open']")
        page.wait_for_selector(".react-flow__node")
        page.click(tid("tab-run"))
        input_id = next(n["id"] for n in starter.graph()["nodes"] if n["component"] == "io.chat_input")
        page.fill(tid(f"run-input-{input_id}"), starter.try_input)
        page.click(tid("run-button"))
        page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
        answer = page.locator(tid("answer"))
        page.wait_for_function(
            "() => (document.querySelector(\"[data-testid='answer']\")?.innerText || '').length > 12"
        )
        run = latest_run(workspace_a)
        assert run.status == RunStatus.SUCCEEDED, key
        assert run.flow.name == starter.name and not run.flow_version.is_draft, key
        assert answer.inner_text().strip(), key
        shot(page, f"builder-template-{key}.png")
    assert Run.objects.filter(workspace=workspace_a, status=RunStatus.SUCCEEDED).count() == len(STARTERS)
    assert editor.console_errors == []


# --- the canvas at laptop size ------------------------------------------------------------------
def _overlap(a: dict, b: dict) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def test_the_canvas_at_1280x800_keeps_text_readable_and_no_node_under_the_map(
    open_page, workspace_a, erin_editor
):
    from flows.transfer import flow_from_starter

    flow = flow_from_starter(workspace=workspace_a, acting=acting(workspace_a, erin_editor), key="support-bot")
    editor, page = open_editor(open_page, erin_editor, flow)
    assert page.viewport_size == {"width": 1280, "height": 800}
    page.wait_for_selector(".side-minimap")
    page.click(tid("fit-view"))

    def zoom() -> float:
        transform = page.locator(".react-flow__viewport").evaluate("e => e.style.transform")
        return float(re.search(r"scale\(([\d.]+)\)", transform).group(1))

    def check(name: str) -> None:
        minimap = page.locator(".side-minimap").bounding_box()
        for box in page.locator(".react-flow__node").evaluate_all(
            "els => els.map(e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; })"
        ):
            assert not _overlap(box, minimap), (name, box, minimap)
        # Text stays readable: node titles at 15 px are drawn at 11 px or more.
        assert zoom() >= 0.75, name
        title = page.locator(".node-title").first
        size = float(title.evaluate("e => getComputedStyle(e).fontSize").replace("px", ""))
        assert size * zoom() >= 11, name

    check("after fit view")
    shot(page, "builder-1280x800.png")
    canvas_before = page.locator(tid("canvas")).bounding_box()["width"]
    page.click(tid("palette-collapse"))
    page.click(tid("dock-collapse"))
    page.click(tid("fit-view"))
    canvas_after = page.locator(tid("canvas")).bounding_box()["width"]
    assert canvas_after > canvas_before + 400
    assert page.locator(".side-minimap").count() == 0  # folded away with the palette
    # More room: the whole bot fits, still readable.
    shot(page, "builder-1280x800-collapsed.png")
    page.click(tid("palette-expand"))
    page.click(tid("dock-expand"))
    page.click(tid("minimap-toggle"))
    assert page.locator(".side-minimap").count() == 0
    page.click(tid("minimap-toggle"))
    page.wait_for_selector(".side-minimap")
    page.click(tid("fit-view"))
    check("after toggling")
    # Tidy up lays the flow out with dagre; undo puts it back.
    where = "() => JSON.stringify([...document.querySelectorAll('.react-flow__node')].map(e => e.dataset.id + ' ' + e.style.transform).sort())"
    positions = page.evaluate(where)
    page.click(tid("tidy-up"))
    page.wait_for_function(f"(before) => ({where})() !== before", arg=positions)
    assert page.evaluate(where) != positions
    page.keyboard.press("Control+z")
    page.wait_for_function(f"(before) => ({where})() === before", arg=positions)
    assert editor.console_errors == []
