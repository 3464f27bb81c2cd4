"""Shared helpers for the browser tests: Debian's Chromium through Playwright, signed-in
pages that record console errors, drag-and-drop on the canvas, and a saved demo flow."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User, Workspace
from runs.models import Run, RunEvent
from tests.conftest import PASSWORD
from tests.live import LiveStack

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


# The editor island's draft is not being saved (or there is no editor on the page).
DRAFT_SETTLED = """() => {
  const island = document.querySelector("[data-testid='island']");
  return !island || !["pending", "saving"].includes(island.dataset.draft);
}"""


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Any]:
    # Module-scoped: Playwright's sync API keeps an event loop running in the main thread
    # while it is open, which would break asyncio.run() in every later test module.
    from playwright import sync_api as playwright_api

    if not Path(CHROMIUM).exists():
        from tests.conftest import IN_CI

        if IN_CI:
            pytest.fail("Debian's chromium must be installed under CI (make browser)")
        pytest.skip("Debian's chromium is not installed (make browser)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls in these tests
    # are ordinary blocking calls made between browser steps, never from inside that loop.
    # Only while the browser is open, so other modules keep Django's async-safety checks.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with playwright_api.sync_playwright() as pw:
            instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


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
        # An editor closed with a change its draft has not saved yet sends it as the page
        # goes (a keepalive request). Let it save first, so that no request reaches the
        # server while the test's database is being emptied (a deadlock with the flush).
        if not self.page.is_closed():
            # A page that went away or never settles is closed anyway.
            with contextlib.suppress(Exception):
                self.page.wait_for_function(DRAFT_SETTLED, timeout=10_000)
        self.context.close()


@pytest.fixture(name="open_page")
def open_page_fixture(browser: Any, live_stack: LiveStack) -> Iterator[Any]:
    """open_page(user) -> a signed-in Page; every page is closed after the test."""
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


WATCH_OUTPUT = """(nodeId) => {
  window.__seen = [];
  const status = () => document.querySelector("[data-testid='run-status']");
  const output = () => document.querySelector(`[data-testid='output-${nodeId}']`);
  const note = () => {
    const state = status() && status().getAttribute("data-status");
    const text = output() ? output().innerText.trimEnd() : "";
    const seen = window.__seen;
    if (state === "running" && text && seen[seen.length - 1] !== text) seen.push(text);
  };
  note();
  new MutationObserver(note).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}"""
FINISHED = (
    "[data-testid='run-status']"
    ":is([data-status=success], [data-status=error], [data-status=cancelled])"
)


def watch_stream(
    page: Any, node_id: str, *, screenshot: Path | None = None, timeout: float = 60
) -> list[str]:
    """The distinct texts the node's output showed while the run was `running`.

    The page records them itself at every change of the DOM (a sampling loop here would
    see fewer of them the slower the machine), until the run has finished. Only texts
    shown while the run is still `running` count, so text that arrived all at once at the
    end (and was merely typed out by the typewriter) would not pass for a stream.
    """
    page.evaluate(WATCH_OUTPUT, node_id)
    if screenshot is not None:
        page.wait_for_function(
            f"() => window.__seen.length >= 3 || document.querySelector({FINISHED!r})",
            timeout=timeout * 1000,
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    page.wait_for_selector(FINISHED, timeout=timeout * 1000)
    return page.evaluate("() => window.__seen")


def wait_output_complete(page: Any, node_id: str) -> str:
    page.wait_for_selector(f"{tid(f'output-{node_id}')}[data-complete='true']")
    return page.locator(tid(f"output-{node_id}")).inner_text().rstrip()


def latest_run(workspace: Workspace) -> Run:
    return Run.objects.filter(workspace=workspace).order_by("-created_at").first()


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
