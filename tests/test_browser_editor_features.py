"""Editor features in a real browser against the live stack: version history (load, diff),
the unsaved-changes guard, validation problems on nodes, keyboard use, copy/paste/undo,
the credential picker (secrets never reach the page) and cancelling a run."""

from __future__ import annotations

import re

import pytest

from accounts.models import Membership
from flows.models import FlowVersion
from runs.models import Run, RunStatus
from tests.browser import (  # noqa: F401 (fixtures)
    REPLY,
    SCREENSHOTS,
    browser_fixture,
    demo_flow,
    latest_run,
    node_ids,
    open_page_fixture,
    tid,
    wait_output_complete,
)
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def test_version_history_diff_and_load_with_an_unsaved_changes_guard(
    open_page, workspace_a, erin_editor
):
    flow = demo_flow(workspace_a, erin_editor, reply="first reply", delay_ms=0)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    # The editor autosaves a draft a moment after each change, and only asks before leaving
    # while the server has not confirmed it yet: hold the draft save so it is unconfirmed.
    held: list = []
    page.route(re.compile(r".*/flows/\d+/draft$"), lambda route: held.append(route))
    page.locator(tid("node-demo_1")).click()
    page.fill("[data-param=reply]", "second reply")
    page.wait_for_selector(tid("unsaved"))

    # Leaving with unsaved changes asks first; staying keeps the edit.
    dialogs: list[str] = []

    def stay(dialog):
        dialogs.append(dialog.type)
        dialog.dismiss()

    page.once("dialog", stay)
    page.click("a:has-text('← Flows')")
    # Wait for the dialog itself (Playwright delivers it while the page is waited on),
    # with a deadline that only fails the test, instead of for 300 ms.
    for _ in range(400):
        if dialogs:
            break
        page.wait_for_timeout(25)
    assert dialogs == ["beforeunload"]
    assert f"/flows/{flow.pk}/" in page.url
    assert page.input_value("[data-param=reply]") == "second reply"
    page.unroute(re.compile(r".*/flows/\d+/draft$"))
    for route in held:
        route.continue_()

    page.fill(tid("version-note"), "better wording")
    page.click(tid("save"))
    page.wait_for_selector(f"{tid('version')}:has-text('v2')")
    saved = FlowVersion.objects.get(flow=flow, number=2)
    assert saved.note == "better wording"
    assert saved.graph["nodes"][1]["params"]["reply"] == "second reply"

    # Compare v1 with v2: exactly the changed parameter.
    page.click(tid("tab-versions"))
    assert "better wording" in page.locator(tid("version-2")).inner_text()
    page.select_option("#diff-left", "1")
    page.select_option("#diff-right", "2")
    page.click("button:has-text('Show differences')")
    diff = page.locator(tid("diff")).inner_text()
    assert "demo_1: reply" in diff and "node" not in diff and "edge" not in diff

    # Load v1 onto the canvas.
    page.locator(tid("version-1")).locator("button:has-text('Load')").click()
    page.wait_for_selector(f"{tid('version')}:has-text('v1')")
    assert not page.locator(tid("unsaved")).count()
    page.locator(tid("node-demo_1")).click()
    assert page.input_value("[data-param=reply]") == "first reply"
    assert editor.console_errors == []


def test_validation_problems_show_on_the_node_and_an_invalid_graph_is_not_saved(
    open_page, workspace_a, erin_editor
):
    from flows.services import flow_create

    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow = flow_create(workspace=workspace_a, acting=acting, name="Empty")
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")

    # Keyboard only: search the palette, then Enter on a component adds it.
    page.wait_for_selector(tid("palette-io.chat_input"))
    page.fill("input[aria-label='Search components']", "offline")
    page.wait_for_selector(tid("palette-io.chat_input"), state="detached")
    assert page.locator(tid("palette-llm.demo")).is_visible()
    page.focus(tid("palette-llm.demo"))
    page.keyboard.press("Enter")
    assert node_ids(page) == ["demo_1"]

    # Its prompt input is fed by nothing: the problem appears on the node itself.
    problems = page.locator(tid("problems-demo_1"))
    problems.wait_for()
    assert "prompt" in problems.inner_text().lower()

    page.click(tid("save"))
    page.wait_for_selector(f"{tid('save-state')}:has-text('Not saved')")
    assert not FlowVersion.objects.filter(flow=flow).exists()
    assert page.locator(tid("version")).inner_text() == "no version yet"
    assert all("400" in e for e in editor.console_errors), editor.console_errors  # the refusal


def test_copy_paste_undo_and_a_credential_picker_that_never_shows_the_secret(
    open_page, workspace_a, alice_owner, erin_editor
):
    from flows.services import credential_create

    credential_create(
        workspace=workspace_a,
        acting=Membership.objects.get(workspace=workspace_a, user=alice_owner),
        name="Team gateway",
        provider="openai",
        base_url="https://llm.example.com/v1",
        api_key="sk-very-secret-123",
    )
    flow = demo_flow(workspace_a, erin_editor, reply="copied reply", delay_ms=0)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")

    page.locator(tid("node-demo_1")).click()
    page.keyboard.press("Control+c")
    page.keyboard.press("Control+v")
    page.wait_for_selector(tid("node-demo_2"))
    page.locator(tid("node-demo_2")).click()
    assert page.input_value("[data-param=reply]") == "copied reply"
    page.keyboard.press("Control+z")
    page.wait_for_selector(tid("node-demo_2"), state="detached")
    page.keyboard.press("Control+Shift+z")
    page.wait_for_selector(tid("node-demo_2"))

    page.click(tid("palette-llm.openai_chat"))
    page.wait_for_selector(tid("node-openai_chat_1"))
    options = page.locator("[data-param=credential] option").all_inner_texts()
    assert any("Team gateway" in o for o in options), options
    page.select_option("[data-param=credential]", label=next(o for o in options if "Team" in o))
    assert "sk-very-secret-123" not in page.content()

    # A prompt template shows its variables, and each becomes an input port.
    page.click(tid("palette-prompt.template"))
    page.wait_for_selector(tid("node-template_1"))
    page.fill("[data-param=template]", "Answer {question} for {customer}, not {{literal}}")
    assert page.locator(tid("vars-template")).inner_text() == "Variables: questioncustomer"
    page.wait_for_selector(tid("in-template_1-question"))
    page.wait_for_selector(tid("in-template_1-customer"))
    assert page.locator(tid("in-template_1-literal")).count() == 0
    assert editor.console_errors == []


def test_cancel_stops_a_running_run(open_page, workspace_a, erin_editor):
    flow = demo_flow(workspace_a, erin_editor, reply=REPLY, delay_ms=200)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "Hello?")
    page.click(tid("run-button"))
    page.wait_for_selector(tid("output-demo_1"))
    page.click(tid("cancel-button"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='cancelled']")
    run = latest_run(workspace_a)
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    assert page.locator(tid("output-demo_1")).inner_text().strip() != REPLY
    assert not page.locator(tid("cancel-button")).is_enabled()
    assert page.locator(tid("run-button")).is_enabled()
    assert editor.console_errors == []


def finished_run(workspace, user, flow, timeout: float = 30) -> Run:
    """Start a run of `flow` through the service and wait for the worker to finish it."""
    import time

    from runs.services import new_session_id, run_start

    run = run_start(
        workspace=workspace,
        acting=Membership.objects.get(workspace=workspace, user=user),
        session_id=new_session_id(),
        flow=flow,
        inputs={"input": "Hello?"},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run.pk} still {run.status}")


def test_run_page_shows_a_finished_run_replays_it_and_editors_rerun_it(
    open_page, workspace_a, erin_editor, bob_viewer
):
    flow = demo_flow(workspace_a, erin_editor, reply=REPLY, delay_ms=60)
    run = finished_run(workspace_a, erin_editor, flow)
    assert run.status == RunStatus.SUCCEEDED

    # A viewer sees the finished run in the run view, complete.
    viewer = open_page(bob_viewer)
    page = viewer.page
    viewer.goto(f"/w/acme/runs/{run.pk}/")
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
    page.wait_for_selector(f"{tid('output-demo_1')}[data-complete='true']")
    assert page.locator(tid("output-demo_1")).inner_text().strip() == REPLY
    assert page.locator(tid("rerun-button")).count() == 0  # viewers replay, not run

    # Replay at the original pace: the text starts over and grows back, event by event.
    # The page records the output's length at every change itself (a sampling loop here
    # would see fewer states the slower the machine), until the replay has finished.
    page.evaluate(
        """() => {
          window.__lengths = [];
          const output = () => document.querySelector("[data-testid='output-demo_1']");
          new MutationObserver(() => {
            const el = output();
            const n = el ? el.textContent.trimEnd().length : 0;
            if (window.__lengths[window.__lengths.length - 1] !== n) window.__lengths.push(n);
          }).observe(document.body, { subtree: true, childList: true, characterData: true });
        }"""
    )
    page.select_option("#replay-speed", "1")
    page.click(tid("replay-button"))
    page.wait_for_selector(f"{tid('replay-state')}:has-text('playing')")
    page.wait_for_selector(f"{tid('replay-state')}:has-text('finished')", timeout=60_000)
    lengths = page.evaluate("() => window.__lengths")
    assert 0 in lengths, lengths  # it started over
    partial = [n for n in lengths if 0 < n < len(REPLY)]
    assert len(set(partial)) >= 3, lengths
    page.wait_for_selector(f"{tid('output-demo_1')}[data-complete='true']")
    assert page.locator(tid("output-demo_1")).inner_text().strip() == REPLY
    assert Run.objects.filter(workspace=workspace_a).count() == 1  # replay runs nothing
    assert viewer.console_errors == []

    # An editor re-runs it from the run page and watches the new run live.
    editor = open_page(erin_editor)
    editor.goto(f"/w/acme/runs/{run.pk}/")
    editor.page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
    editor.page.click(tid("rerun-button"))
    editor.page.wait_for_selector(tid("rerun-link"))
    editor.page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
    rerun = Run.objects.get(rerun_of=run)
    assert rerun.status == RunStatus.SUCCEEDED
    editor.page.wait_for_selector(f"{tid('output-demo_1')}[data-complete='true']")
    assert editor.page.locator(tid("output-demo_1")).inner_text().strip() == REPLY
    assert str(rerun.pk) in editor.page.locator(tid("rerun-link")).get_attribute("href")
    editor.page.screenshot(path=str(SCREENSHOTS / "run-page-rerun.png"))

    # The lists around it: both runs with who and which version; the flow's last run.
    editor.goto("/w/acme/runs/")
    rows = editor.page.locator("tr[data-run]")
    assert rows.count() == 2
    assert "erin@example.com" in rows.first.inner_text() and "v1" in rows.first.inner_text()
    editor.page.screenshot(path=str(SCREENSHOTS / "runs-list.png"))
    editor.goto("/w/acme/flows/")
    assert "succeeded" in editor.page.locator(f"tr[data-flow='{flow.pk}']").inner_text()
    editor.page.screenshot(path=str(SCREENSHOTS / "flow-list.png"))
    assert editor.console_errors == []


def test_running_an_unsaved_draft_runs_exactly_the_canvas_and_keeps_it_as_a_draft_version(
    open_page, workspace_a, erin_editor
):
    flow = demo_flow(workspace_a, erin_editor, reply="saved reply", delay_ms=0)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    page.locator(tid("node-demo_1")).click()
    page.fill("[data-param=reply]", "draft reply")
    page.wait_for_selector(tid("unsaved"))

    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "Hello?")
    page.click(tid("run-button"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
    page.wait_for_selector(f"{tid('output-demo_1')}[data-complete='true']")
    assert page.locator(tid("output-demo_1")).inner_text().strip() == "draft reply"

    run = latest_run(workspace_a)
    assert run.flow_id == flow.pk and run.flow_version.is_draft
    assert run.flow_version.graph["nodes"][1]["params"]["reply"] == "draft reply"
    assert page.locator(tid("unsaved")).is_visible()  # a draft run is not a save
    page.click(tid("tab-versions"))
    page.wait_for_selector(tid(f"version-{run.flow_version.number}"))
    assert "draft" in page.locator(tid(f"version-{run.flow_version.number}")).inner_text()
    assert editor.console_errors == []


def test_a_failing_node_shows_its_error_where_it_happened(open_page, workspace_a, erin_editor):
    from flows.services import flow_create

    def node(node_id: str, component: str, x: int) -> dict:
        return {"id": node_id, "component": component, "params": {}, "position": {"x": x, "y": 0}}

    graph = {
        "nodes": [
            node("chat_input_1", "io.chat_input", 0),
            node("json_1", "parser.json", 260),
            node("text_output_1", "io.text_output", 520),
        ],
        "edges": [
            {
                "source": "chat_input_1",
                "source_port": "text",
                "target": "json_1",
                "target_port": "text",
            },
            {
                "source": "json_1",
                "source_port": "json",
                "target": "text_output_1",
                "target_port": "text",
            },
        ],
    }
    flow = flow_create(
        workspace=workspace_a,
        acting=Membership.objects.get(workspace=workspace_a, user=erin_editor),
        name="Parse",
        graph=graph,
    )
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "this is not JSON")
    page.click(tid("run-button"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='error']")
    assert page.locator(tid("node-status-json_1")).inner_text().startswith("error")
    assert "not valid JSON" in page.locator(tid("node-json_1")).inner_text()
    assert "not valid JSON" in page.locator("section[aria-label='Errors']").inner_text()
    assert page.locator(tid("node-chat_input_1")).get_attribute("data-status") == "done"
    assert page.locator(tid("node-text_output_1")).get_attribute("data-status") != "done"
    assert latest_run(workspace_a).status == RunStatus.FAILED
    assert editor.console_errors == []


def test_an_agent_run_shows_its_tool_calls_in_the_tool_call_log(
    open_page, workspace_a, alice_owner, erin_editor
):
    from flows.services import credential_create, flow_create
    from tests.fakes.fake_openai import FakeOpenAIServer

    script = FakeOpenAIServer(
        reply="The answer is 42.",
        tool_calls=[{"name": "calculator", "arguments": {"expression": "6 * 7"}}],
    )
    with script as server:
        credential = credential_create(
            workspace=workspace_a,
            acting=Membership.objects.get(workspace=workspace_a, user=alice_owner),
            name="Fake gateway",
            provider="openai",
            base_url=server.base_url,
            api_key="sk-fake",
        )

        def node(node_id: str, component: str, params: dict, x: int) -> dict:
            return {
                "id": node_id,
                "component": component,
                "params": params,
                "position": {"x": x, "y": 0},
            }

        def edge(source: str, source_port: str, target: str, target_port: str) -> dict:
            return {
                "source": source,
                "source_port": source_port,
                "target": target,
                "target_port": target_port,
            }

        graph = {
            "nodes": [
                node("chat_input_1", "io.chat_input", {}, 0),
                node("calculator_1", "tool.calculator", {}, 0),
                node(
                    "tools_1",
                    "agent.tools",
                    {"credential": credential.pk, "model": "gpt-test"},
                    260,
                ),
                node("text_output_1", "io.text_output", {}, 520),
            ],
            "edges": [
                edge("chat_input_1", "text", "tools_1", "input"),
                edge("calculator_1", "tool", "tools_1", "tools"),
                edge("tools_1", "text", "text_output_1", "text"),
            ],
        }
        flow = flow_create(
            workspace=workspace_a,
            acting=Membership.objects.get(workspace=workspace_a, user=erin_editor),
            name="Agent",
            graph=graph,
        )
        editor = open_page(erin_editor)
        page = editor.page
        editor.goto(f"/w/acme/flows/{flow.pk}/")
        page.click(tid("tab-run"))
        page.fill(tid("run-input-chat_input_1"), "What is six times seven?")
        page.click(tid("run-button"))
        page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)

    log = page.locator("section[aria-label='Tool calls']").inner_text()
    assert "calculator" in log and "6 * 7" in log and "42" in log
    page.wait_for_selector(f"{tid('output-tools_1')}[data-complete='true']")
    assert page.locator(tid("output-tools_1")).inner_text().strip() == "The answer is 42."
    assert "sk-fake" not in page.content()
    assert editor.console_errors == []


def test_seek_in_a_replay_and_rerun_from_a_node(open_page, workspace_a, erin_editor):
    flow = demo_flow(workspace_a, erin_editor, reply=REPLY, delay_ms=150)
    run = finished_run(workspace_a, erin_editor, flow)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/runs/{run.pk}/")
    page.wait_for_selector(f"{tid('output-demo_1')}[data-complete='true']")

    # A 1x replay of a slow run, then a seek to the end: the text is complete at once.
    page.select_option("#replay-speed", "1")
    page.click(tid("replay-button"))
    page.wait_for_selector(tid("replay-seek"))
    seek = page.locator(tid("replay-seek"))
    last = int(seek.get_attribute("max"))
    assert last == run.last_seq
    seek.fill(str(last))
    seek.press("Enter")
    page.wait_for_selector(f"{tid('output-demo_1')}[data-complete='true']", timeout=3000)
    assert page.locator(tid("output-demo_1")).inner_text().strip() == REPLY
    assert Run.objects.filter(workspace=workspace_a).count() == 1

    # Re-run from the model node: the input comes from this run's log.
    page.wait_for_selector(f"{tid('replay-state')}:has-text('finished')")
    page.select_option(tid("rerun-from"), "demo_1")
    page.click(tid("rerun-button"))
    page.wait_for_selector(tid("rerun-link"))
    page.wait_for_selector(f"{tid('output-demo_1')}[data-complete='true']")
    rerun = Run.objects.get(rerun_of=run)
    assert rerun.rerun_from_node == "demo_1"
    recorded = rerun.events.get(event="node_finished", node_id="chat_input_1").payload
    assert recorded["recorded_from"] == str(run.pk)
    assert editor.console_errors == []


def test_a_password_change_keeps_this_browsers_editor_connected_and_closes_the_others(
    open_page, workspace_a, erin_editor
):
    # Django re-keys the changing session, so the server closes this browser's socket too
    # (4401); the editor's client retries once with the cookie it now holds and resumes
    # the run exactly. Another browser's session has ended: its editor stays closed.
    flow = demo_flow(workspace_a, erin_editor, reply=REPLY, delay_ms=120)
    editor = open_page(erin_editor)
    other = open_page(erin_editor)  # another browser (its own context and session)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    other.goto(f"/w/acme/flows/{flow.pk}/")
    other.page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "Hello?")
    page.click(tid("run-button"))
    page.wait_for_selector(tid("output-demo_1"))

    settings_tab = editor.context.new_page()
    settings_tab.goto(f"{editor.base}/accounts/password/change/")
    settings_tab.fill("input[name=old_password]", PASSWORD)
    new_password = "a-new-passphrase-for-erin-42"
    settings_tab.fill("input[name=new_password1]", new_password)
    settings_tab.fill("input[name=new_password2]", new_password)
    settings_tab.click("form:has(input[name=old_password]) button[type=submit]")
    settings_tab.wait_for_url("**/password/change/done/")

    other.page.wait_for_selector(f"{tid('connection')}[data-state='closed']", timeout=15_000)
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
    page.bring_to_front()  # a background tab gets no animation frames to type the text out
    assert wait_output_complete(page, "demo_1") == REPLY  # every token once, in order
    page.screenshot(path=str(SCREENSHOTS / "editor-after-password-change.png"))
    states = page.evaluate("window.__connStates")
    assert states[-1] == "open", states
    assert page.evaluate("window.__sockets.length") >= 2  # it did reconnect
    assert editor.console_errors == []
