"""The embedded chat in a real browser against the live stack (Daphne, a Celery worker,
Redis, the test database): a website on an allowed origin shows the chat bubble, a visitor
chats, the answer streams, survives Daphne dying mid-answer (the EventSource reconnects and
resumes after its last event) and is exactly what the run's log holds; the conversation is
there again after a reload. A website on another origin cannot frame the chat nor call its
API. The websites are small HTTP servers on loopback ports of their own (another port is
another origin; Chromium lets a website on loopback, not a public one, load from the live
stack on loopback: Private Network Access).
Screenshots: test-artifacts/screenshots/embed*.png."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from accounts.models import Membership
from chat import embeds
from chat.models import Conversation
from chat.services import flow_publish
from runs.models import Run, RunEvent, RunStatus
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    assert_log_has_no_gaps,
    browser_fixture,
    demo_flow,
    logged_tokens,
    open_page_fixture,
    tid,
)

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

REPLY = " ".join(f"词{i:02d}" for i in range(70))
ANSWER = ".embed-assistant:last-of-type"


def _website(live_url: str, public_id: str) -> str:
    return (
        "<!doctype html><html><head><title>Shop</title></head><body>"
        "<h1>Welcome to the shop</h1><p>Questions? Use the chat in the corner.</p>"
        f'<script src="{live_url}/static/flowdeck-embed.js" data-embed="{public_id}" '
        'data-color="#0f766e" async></script></body></html>'
    )


class Website:
    """A website on a loopback port serving `html` at every path."""

    origin = ""
    html = ""


@contextlib.contextmanager
def website() -> Iterator[Website]:
    site = Website()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            body = site.html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    site.origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def _visit(browser: Any) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    return context, page


def _open_chat(page: Any, site: str) -> Any:
    page.goto(f"{site}/")
    page.click("[data-flowdeck-bubble]")
    page.wait_for_selector("iframe[data-flowdeck-chat]")
    return page.frame_locator("iframe[data-flowdeck-chat]")


def _answer_chars(frame: Any) -> int:
    return len(frame.locator(ANSWER).inner_text())


@pytest.fixture
def sites() -> Iterator[tuple[Website, Website]]:
    """Two websites: the shop (whose origin the embed allows) and another."""
    with website() as shop, website() as other:
        yield shop, other


def test_a_visitor_on_an_allowed_website_chats_and_resumes_exactly(
    browser, live_stack, workspace_a, erin_editor, sites
):
    shop, other = sites
    flow = demo_flow(workspace_a, erin_editor, reply=REPLY, delay_ms=60)
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow_publish(workspace=workspace_a, acting=acting, flow=flow, version_number=1)
    embed = embeds.embed_create(
        workspace=workspace_a,
        acting=acting,
        flow=flow,
        settings=embeds.EmbedSettings(
            name="Shop",
            allowed_origins=[shop.origin],
            title="Ask the shop",
            welcome_message="你好！",
        ),
    )
    shop.html = other.html = _website(live_stack.http_url, embed.public_id)
    context, page = _visit(browser)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/events" in r.url else None)
    try:
        chat = _open_chat(page, shop.origin)
        chat.locator(".embed-input").wait_for()
        assert chat.locator(".embed-title").inner_text() == "Ask the shop"
        assert chat.locator(".embed-assistant").first.inner_text() == "你好！"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

        chat.locator(".embed-input").fill("我想查询订单状态")
        chat.locator(".embed-input").press("Enter")
        chat.locator(".embed-user").wait_for()
        deadline = time.monotonic() + 30
        while _answer_chars(chat) < 20:
            assert time.monotonic() < deadline, "no answer streamed"
            time.sleep(0.05)
        page.screenshot(path=str(SCREENSHOTS / "embed-bubble.png"))

        # Daphne dies mid-answer and comes back once the worker has logged more of it.
        run = Run.objects.filter(workspace=workspace_a).latest("created_at")
        shown_at_cut = _answer_chars(chat)
        live_stack.kill("daphne")
        try:
            at_cut = RunEvent.objects.filter(run=run).count()
            deadline = time.monotonic() + 30
            while RunEvent.objects.filter(run=run).count() < at_cut + 5:
                assert time.monotonic() < deadline, "the worker logged nothing meanwhile"
                time.sleep(0.05)
        finally:
            live_stack.start_daphne()

        run.refresh_from_db()
        deadline = time.monotonic() + 60
        while chat.locator(".embed-send").is_disabled():
            assert time.monotonic() < deadline, "the answer never finished"
            time.sleep(0.1)
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED
        assert shown_at_cut < len(REPLY)  # the cut was mid-answer
        assert len(streams) >= 2, streams  # the EventSource reconnected
        assert_log_has_no_gaps(str(run.pk))
        # Exactly the log's tokens: none lost while Daphne was down, none twice.
        assert chat.locator(ANSWER).inner_text().strip() == logged_tokens(str(run.pk), "demo_1")
        assert logged_tokens(str(run.pk), "demo_1") == REPLY
        conversation = Conversation.objects.get(embed=embed)
        assert conversation.visitor and conversation.turns.get().run_id == run.pk

        # A reload brings the conversation back (its token and id are in the frame's storage).
        page.reload()
        page.click("[data-flowdeck-bubble]")
        chat = page.frame_locator("iframe[data-flowdeck-chat]")
        chat.locator(".embed-user").wait_for()
        assert chat.locator(".embed-user").inner_text() == "我想查询订单状态"
        assert chat.locator(ANSWER).inner_text().strip() == REPLY
        page.screenshot(path=str(SCREENSHOTS / "embed-conversation.png"))
        assert errors == []
    finally:
        context.close()


def test_another_website_can_neither_frame_the_chat_nor_call_it(
    browser, live_stack, workspace_a, erin_editor, sites
):
    shop, other = sites
    flow = demo_flow(workspace_a, erin_editor, reply="hi", delay_ms=0)
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow_publish(workspace=workspace_a, acting=acting, flow=flow, version_number=1)
    embed = embeds.embed_create(
        workspace=workspace_a,
        acting=acting,
        flow=flow,
        settings=embeds.EmbedSettings(name="Shop", allowed_origins=[shop.origin]),
    )
    shop.html = other.html = _website(live_stack.http_url, embed.public_id)
    context, page = _visit(browser)
    try:
        page.goto(f"{other.origin}/")
        page.click("[data-flowdeck-bubble]")
        page.wait_for_selector("iframe[data-flowdeck-chat]")
        # The browser refuses to render the framed chat (CSP frame-ancestors): no chat in it.
        frame_url = f"{live_stack.http_url}/embed/{embed.public_id}/"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frames = [f for f in page.frames if f is not page.main_frame]
            if frames and frames[0].url != "about:blank":
                break
            time.sleep(0.1)
        for frame in page.frames:
            if frame is page.main_frame:
                continue
            assert frame.url != frame_url or frame.locator(".embed-input").count() == 0
            assert frame.evaluate("() => !!document.querySelector('.embed-input')") is False
        # Its scripts calling the API get nothing (403, and no CORS header to read it).
        outcome = page.evaluate(
            """async (url) => {
                try {
                    const r = await fetch(url, {method: "POST", body: "{}",
                        headers: {"Content-Type": "application/json"}});
                    return "read " + r.status;
                } catch (e) { return "refused"; }
            }""",
            f"{live_stack.http_url}/embed/{embed.public_id}/api/visitor",
        )
        assert outcome == "refused"

        # The same page on the allowed origin gets the chat.
        chat = _open_chat(page, shop.origin)
        chat.locator(".embed-input").wait_for()
        assert not Run.objects.filter(workspace=workspace_a).exists()
    finally:
        context.close()


def test_an_editor_embeds_a_flow_from_its_embed_page(
    open_page, live_stack, workspace_a, erin_editor, sites
):
    shop, _ = sites
    flow = demo_flow(workspace_a, erin_editor, reply="Hello from the shop", delay_ms=0)
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow_publish(workspace=workspace_a, acting=acting, flow=flow, version_number=1)
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/versions/")
    page.click("text=Embed on a website")
    form = page.locator(tid("embed-form-new"))
    form.locator("input[name=name]").fill("Help centre")
    form.locator("textarea[name=allowed_origins]").fill(f"{shop.origin}\nnot a website")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("text=is not an origin")
    assert not embeds.Embed.objects.exists()

    form = page.locator(tid("embed-form-new"))
    form.locator("input[name=name]").fill("Help centre")
    form.locator("textarea[name=allowed_origins]").fill(shop.origin)
    form.locator("input[name=title]").fill("Ask the shop")
    form.locator("button[type=submit]").click()
    page.wait_for_selector(tid("snippet-script"))
    embed = embeds.Embed.objects.get()
    snippet = page.locator(tid("snippet-script")).inner_text()
    assert f'data-embed="{embed.public_id}"' in snippet
    assert snippet.startswith(f'<script src="{live_stack.http_url}/static/flowdeck-embed.js"')
    page.screenshot(path=str(SCREENSHOTS / "embed-settings.png"), full_page=True)

    # The snippet, pasted into the website as it is, gives the chat.
    shop.html = f"<!doctype html><html><body><h1>Shop</h1>{snippet}</body></html>"
    visitor = editor.context.new_page()
    visitor.goto(f"{shop.origin}/")
    visitor.click("[data-flowdeck-bubble]")
    chat = visitor.frame_locator("iframe[data-flowdeck-chat]")
    chat.locator(".embed-input").fill("hi")
    chat.locator(".embed-input").press("Enter")
    chat.locator(".embed-assistant:has-text('Hello from the shop')").wait_for()
    visitor.close()
    assert editor.console_errors == []
