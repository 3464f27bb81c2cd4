"""The editor and the run view in a real browser against the whole live stack.

Chromium (Debian's, driven by Playwright) talks to real Daphne, a real Celery worker, Redis
and the test database: nothing on the server side is mocked. Screenshots of the editor
mid-run are written to test-artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User, Workspace
from runs.models import Run, RunEvent, RunStatus
from tests.conftest import PASSWORD, make_user
from tests.live import LiveStack, live_stack  # noqa: F401 (fixture)

# Playwright's sync API runs an event loop in this thread; the ORM calls in these tests are
# ordinary blocking calls made between browser steps, never from inside that loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Forty words streamed one token at a time: long enough to watch, short enough to wait for.
REPLY = " ".join(f"word{i:02d}" for i in range(40))

# Records every WebSocket the page opens, so a test can cut the live connection.
TRACK_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__connStates = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.__sockets.push(this); }
  };
  new MutationObserver(() => {
    const el = document.querySelector('[data-testid=connection]');
    const state = el && el.getAttribute('data-state');
    if (state && window.__connStates[window.__connStates.length - 1] !== state) {
      window.__connStates.push(state);
    }
  }).observe(document, { subtree: true, attributes: true, childList: true });
})();
"""


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make browser)")
    with playwright_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class Page:
    """A signed-in page that records console errors (a test asserts there are none)."""

    def __init__(self, browser: Any, stack: LiveStack, user: User) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.context.add_init_script(TRACK_SOCKETS)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.console_errors: list[str] = []
        self.page.on(
            "console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.on(
            "response",
            lambda r: (
                self.console_errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None
            ),
        )
        self.base = stack.http_url
        self.login(user)

    def login(self, user: User) -> None:
        page = self.page
        page.goto(f"{self.base}/accounts/login/")
        page.fill("input[name=username]", user.email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        assert "/accounts/login/" not in page.url, "login failed"

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(browser: Any, live_stack: LiveStack) -> Iterator[Any]:  # noqa: F811
    pages: list[Page] = []

    def make(user: User) -> Page:
        page = Page(browser, live_stack, user)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()


def tid(test_id: str) -> str:
    return f"[data-testid='{test_id}']"


def drag_to_canvas(page: Any, component: str, x: int, y: int) -> None:
    page.drag_and_drop(
        tid(f"palette-{component}"), ".react-flow__pane", target_position={"x": x, "y": y}
    )


def drag_connection(page: Any, source: str, target: str) -> None:
    """Press on a port, move across the canvas in steps, release on the other port."""
    a = page.locator(tid(source)).bounding_box()
    b = page.locator(tid(target)).bounding_box()
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=15)
    page.mouse.up()


def node_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all(".react-flow__node", "els => els.map(e => e.dataset.id)")


def logged_tokens(run_id: str, node_id: str) -> str:
    events = RunEvent.objects.filter(run_id=run_id, event="on_token", node_id=node_id)
    return "".join(e.payload.get("data", "") for e in events.order_by("seq"))


def assert_log_has_no_gaps(run_id: str) -> None:
    seqs = list(
        RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True)
    )
    assert seqs == list(range(1, len(seqs) + 1))


def watch_stream(
    page: Any, node_id: str, *, screenshot: Path | None = None, timeout: float = 60
) -> list[str]:
    """Sample the node's output while the run is running; the distinct texts seen.

    Only texts seen while the run is still `running` count, so text that arrived all at
    once at the end (and was merely typed out by the typewriter) would not pass for a stream.
    """
    seen: list[str] = []
    status = page.locator(tid("run-status"))
    output = page.locator(tid(f"output-{node_id}"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = status.get_attribute("data-status") if status.count() else None
        if output.count() and state == "running":
            text = output.inner_text().rstrip()
            if text and (not seen or seen[-1] != text):
                seen.append(text)
                if screenshot is not None and len(seen) == 3:
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshot))
        if state in {"success", "error", "cancelled"}:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"the run did not complete within {timeout}s; saw {seen[-1:]}")


def wait_output_complete(page: Any, node_id: str) -> str:
    page.wait_for_selector(f"{tid(f'output-{node_id}')}[data-complete='true']")
    return page.locator(tid(f"output-{node_id}")).inner_text().rstrip()


def latest_run(workspace: Workspace) -> Run:
    return Run.objects.filter(workspace=workspace).order_by("-created_at").first()


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
    open_page, workspace_a, erin_editor
):
    flow = demo_flow(workspace_a, erin_editor, reply=REPLY, delay_ms=80)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "Hello?")
    page.click(tid("run-button"))
    page.wait_for_function(
        "() => (document.querySelector(\"[data-testid='output-demo_1']\")?.textContent || '').length > 20"
    )

    # Cut the connection from the page and keep the network down for a while, so events
    # are produced while nobody listens.
    editor.context.set_offline(True)
    page.evaluate("() => window.__sockets.forEach(s => s.close())")
    page.wait_for_selector(f"{tid('connection')}[data-state='reconnecting']")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "editor-reconnecting.png"))
    time.sleep(1.5)
    editor.context.set_offline(False)

    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
    final = wait_output_complete(page, "demo_1")
    run = latest_run(workspace_a)
    assert final == logged_tokens(str(run.pk), "demo_1").strip() == REPLY
    states = page.evaluate("() => window.__connStates")
    assert "reconnecting" in states and states[-1] == "open", states
    assert page.evaluate("() => window.__sockets.length") >= 2
    # Only the failed reconnect attempts while offline may complain.
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
    # Going around the disabled button, straight through the page's protocol client: refused.
    outcome = page.evaluate(
        """(flow) => window.flowdeck.client.run({flow, inputs: {input: "hi"}})
            .then(() => "accepted", (e) => (e.rejection ? e.rejection.code : String(e)))""",
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


# --- data -------------------------------------------------------------------------------


def demo_graph(reply: str, delay_ms: int) -> dict[str, Any]:
    return {
        "nodes": [
            {
                "id": "chat_input_1",
                "component": "io.chat_input",
                "params": {},
                "position": {"x": 0, "y": 0},
            },
            {
                "id": "demo_1",
                "component": "llm.demo",
                "params": {"reply": reply, "delay_ms": delay_ms},
                "position": {"x": 260, "y": 120},
            },
            {
                "id": "text_output_1",
                "component": "io.text_output",
                "params": {},
                "position": {"x": 520, "y": 0},
            },
        ],
        "edges": [
            {
                "source": "chat_input_1",
                "source_port": "text",
                "target": "demo_1",
                "target_port": "prompt",
            },
            {
                "source": "demo_1",
                "source_port": "text",
                "target": "text_output_1",
                "target_port": "text",
            },
        ],
    }


def demo_flow(workspace: Workspace, user: User, *, reply: str, delay_ms: int) -> Any:
    """A saved three-node flow (chat input -> llm.demo -> text output), version 1."""
    from accounts.models import Membership
    from flows.services import flow_create

    return flow_create(
        workspace=workspace,
        acting=Membership.objects.get(workspace=workspace, user=user),
        name="Streaming demo",
        graph=demo_graph(reply, delay_ms),
        note="v1",
    )
