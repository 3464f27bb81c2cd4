"""The chat playground in a real browser against the whole live stack (Daphne, a Celery
worker, Redis, the test database): send, watch the Markdown answer stream, cut the
connection and see it resume exactly, stop, regenerate; the conversation lists its turns;
the search box narrows the list. Screenshots go to test-artifacts/screenshots/playground*.png."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.utils import timezone

from accounts.models import Membership
from chat.models import Conversation, ConversationTurn
from runs.models import Run, RunStatus
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

# A model answer with a table, a code block and HTML a model could be made to write.
MARKDOWN_REPLY = (
    "Here is what I found:\n\n"
    "| name | value |\n|---|---|\n| alpha | 1 |\n| beta | 2 |\n\n"
    "```python\nprint('hello')\n```\n\n"
    'Done <img src="x" onerror="window.__pwned = 1"> <script>window.__pwned = 2</script> now.'
)

ANSWER = "[data-testid='chat-answer']"
LAST_ANSWER_TEXT = f"{ANSWER}:last-of-type [data-testid='chat-answer-text']"

WATCH = """() => {
  window.__seen = [];
  const note = () => {
    const answers = document.querySelectorAll("[data-testid='chat-answer']");
    const last = answers[answers.length - 1];
    if (!last || last.getAttribute("data-status") !== "running") return;
    const text = last.querySelector("[data-testid='chat-answer-text']");
    const t = text ? text.innerText : "";
    if (t && window.__seen[window.__seen.length - 1] !== t) window.__seen.push(t);
  };
  new MutationObserver(note).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}"""


def _last_status(page: object) -> str:
    return str(page.locator(ANSWER).last.get_attribute("data-status"))  # type: ignore[attr-defined]


def test_send_stream_markdown_resume_stop_regenerate(
    open_page, live_stack, workspace_a, erin_editor
):
    flow = demo_flow(workspace_a, erin_editor, reply=MARKDOWN_REPLY, delay_ms=60)
    chat = open_page(erin_editor)
    page = chat.page
    page.set_viewport_size({"width": 1280, "height": 800})
    chat.goto(f"/w/acme/flows/{flow.pk}/chat/")
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    page.evaluate(WATCH)

    # 1. Send: the answer streams as Markdown while the run is running.
    page.fill(tid("chat-input-chat_input_1"), "Show me a table")
    page.click(tid("chat-send"))
    page.wait_for_function(
        "(sel) => (document.querySelector(sel)?.innerText || '').length > 15", arg=LAST_ANSWER_TEXT
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "playground-streaming.png"))

    # 2. Cut the connection mid-stream: the client reconnects and resumes from its last seq.
    page.evaluate("() => window.__sockets.forEach(s => s.close())")
    page.wait_for_function("() => window.__connStates.slice(-2).join() === 'reconnecting,open'")
    page.wait_for_selector(f"{ANSWER}[data-status='success']", timeout=60_000)
    page.wait_for_selector(f"{LAST_ANSWER_TEXT} table td")

    run = Run.objects.filter(workspace=workspace_a).order_by("-created_at").first()
    assert run is not None and run.status == RunStatus.SUCCEEDED
    assert_log_has_no_gaps(str(run.pk))
    logged = logged_tokens(str(run.pk), "demo_1")
    assert logged == MARKDOWN_REPLY
    # What the page shows is exactly what the log holds: no token lost or doubled.
    page.wait_for_function(
        "([sel, n]) => document.querySelector(sel)?.getAttribute('data-chars') === String(n)",
        arg=[LAST_ANSWER_TEXT, len(logged)],
    )
    seen = page.evaluate("() => window.__seen")
    assert len(seen) >= 3, seen  # it streamed: several growing texts while running
    answer = page.locator(LAST_ANSWER_TEXT)
    cells = answer.locator("td").all_inner_texts()
    assert cells == ["alpha", "1", "beta", "2"]
    assert answer.locator("pre code").inner_text().strip() == "print('hello')"
    # The model's raw HTML is shown as text: no element, no handler, nothing ran.
    assert answer.locator("script, img, [onerror]").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    assert '<img src="x" onerror=' in answer.inner_text()
    assert "now." in answer.inner_text()
    trace = page.locator(tid("chat-trace")).last.get_attribute("href")
    assert trace == f"/w/acme/runs/{run.pk}/"
    page.wait_for_selector(f"{tid('conversation-row')} {tid('conversation-turns')}:has-text('1 turn')")
    page.screenshot(path=str(SCREENSHOTS / "playground.png"))

    # 3. A second turn in the same conversation, stopped mid-stream.
    page.fill(tid("chat-input-chat_input_1"), "Again, slowly")
    page.click(tid("chat-send"))
    page.wait_for_function(
        "() => { const a = [...document.querySelectorAll(\"[data-testid='chat-answer']\")];"
        " return a.length === 2 && a[1].getAttribute('data-status') === 'running'"
        " && (a[1].innerText || '').length > 5; }"
    )
    page.click(tid("chat-stop"))
    page.wait_for_selector(f"{ANSWER}[data-status='cancelled']", timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / "playground-stopped.png"))

    # 4. Regenerate: the last message again, as a new turn that runs to the end.
    page.click(tid("chat-regenerate"))
    page.wait_for_function(
        "() => { const a = [...document.querySelectorAll(\"[data-testid='chat-answer']\")];"
        " return a.length === 3 && a[2].getAttribute('data-status') === 'success'; }",
        timeout=60_000,
    )
    page.wait_for_selector(f"{tid('conversation-row')} {tid('conversation-turns')}:has-text('3 turns')")
    users = page.locator(tid("chat-user")).all_inner_texts()
    assert users == ["Show me a table", "Again, slowly", "Again, slowly"]

    conversation = Conversation.objects.get(workspace=workspace_a, flow=flow)
    turns = list(
        ConversationTurn.objects.filter(conversation=conversation)
        .order_by("number")
        .values_list("number", "run__status", "run__inputs")
    )
    assert [(n, s) for n, s, _ in turns] == [
        (1, RunStatus.SUCCEEDED),
        (2, RunStatus.CANCELLED),
        (3, RunStatus.SUCCEEDED),
    ]
    assert [i["chat_input_1"] for _, _, i in turns] == ["Show me a table", "Again, slowly", "Again, slowly"]

    # The page reloaded shows the same conversation from the API.
    page.reload()
    page.wait_for_selector(f"{tid('conversation-row')}")
    page.click(f"{tid('conversation-row')} .chat-pick")
    page.wait_for_function(
        "() => document.querySelectorAll(\"[data-testid='chat-answer']\").length === 3"
    )
    page.screenshot(path=str(SCREENSHOTS / "playground-reloaded.png"))
    errors = [e for e in chat.console_errors if "WebSocket" not in e]
    assert errors == [], errors[:3]


def test_the_editor_has_a_chat_tab_that_runs_turns_of_a_conversation(
    open_page, live_stack, workspace_a, erin_editor
):
    flow = demo_flow(workspace_a, erin_editor, reply="Hello from **the editor**.", delay_ms=20)
    editor = open_page(erin_editor)
    page = editor.page
    page.set_viewport_size({"width": 1280, "height": 800})
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    page.click(tid("tab-chat"))
    page.fill(tid("chat-input-chat_input_1"), "Hi")
    page.click(tid("chat-send"))
    page.wait_for_selector(f"{ANSWER}[data-status='success'] strong:has-text('the editor')")
    # Switching tabs keeps the conversation: the second message is its second turn.
    page.click(tid("tab-run"))
    page.click(tid("tab-chat"))
    page.fill(tid("chat-input-chat_input_1"), "Again")
    page.click(tid("chat-send"))
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='chat-answer']\")]"
        ".filter((a) => a.getAttribute('data-status') === 'success').length === 2"
    )
    page.wait_for_function(
        "() => document.querySelectorAll(\"[data-testid='chat-answer-text'] strong\").length === 2"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "playground-editor-tab.png"))
    conversation = Conversation.objects.get(workspace=workspace_a, flow=flow)
    assert conversation.turns.count() == 2
    assert page.locator(tid("chat-page-link")).get_attribute("href") == (
        f"/w/acme/flows/{flow.pk}/chat/"
    )
    assert [e for e in editor.console_errors if "WebSocket" not in e] == []


def _conversation(flow: Any, user: Any, title: str, said: str, answered: str) -> Conversation:
    """A conversation with one finished turn, written as a worker would have left it (no
    run is queued: the suite's live worker would execute it)."""
    from chat.services import conversation_create

    acting = Membership.objects.get(workspace=flow.workspace, user=user)
    conversation = conversation_create(
        workspace=flow.workspace, acting=acting, flow=flow, title=title
    )
    now = timezone.now()
    run = Run.objects.create(
        workspace=flow.workspace,
        flow=flow,
        flow_version=flow.versions.get(number=1),
        session_id=conversation.session_id,
        started_by=user,
        inputs={"chat_input_1": said},
        outputs={"text_output_1": answered},
        status=RunStatus.SUCCEEDED,
        started_at=now,
        finished_at=now,
    )
    ConversationTurn.objects.create(
        workspace=flow.workspace, conversation=conversation, number=1, run=run
    )
    return conversation


ROWS = tid("conversation-rows")


def _listed(page: Any) -> list[str]:
    return page.locator(f"{tid('conversation-row')} .chat-pick").all_inner_texts()


def _wait_shown_for(page: Any, query: str) -> None:
    """Until the list answers `query` (the rows of its newest request are on the page)."""
    page.wait_for_function(
        "([sel, q]) => { const ul = document.querySelector(sel);"
        " return ul && ul.getAttribute('data-shown-for') === q"
        " && ul.getAttribute('aria-busy') === 'false'; }",
        arg=[ROWS, query],
    )


def test_the_search_box_narrows_the_conversations_by_title_and_turns_chinese_included(
    open_page, live_stack, workspace_a, workspace_b, erin_editor, mallory_owner
):
    flow = demo_flow(workspace_a, erin_editor, reply="ok", delay_ms=0)
    _conversation(flow, erin_editor, "客服 1", "我想查询订单状态", "您的订单已发货。")
    _conversation(flow, erin_editor, "Weather", "Is it raining in Paris?", "Not today.")
    _conversation(flow, erin_editor, "Refund request", "I was charged twice", "Refunded.")
    foreign = demo_flow(workspace_b, mallory_owner, reply="ok", delay_ms=0)
    _conversation(foreign, mallory_owner, "他们的订单", "订单", "订单")

    chat = open_page(erin_editor)
    page = chat.page
    requests: list[str] = []
    listing = f"/api/w/acme/flows/{flow.pk}/conversations"
    page.on("request", lambda r: requests.append(r.url) if listing in r.url else None)
    chat.goto(f"/w/acme/flows/{flow.pk}/chat/")
    _wait_shown_for(page, "")
    everything = ["Refund request", "Weather", "客服 1"]
    assert _listed(page) == everything

    # Typing: one search once typing pauses (the debounce), matched in the turns' text.
    requests.clear()
    page.click(tid("conversation-search"))
    page.keyboard.type("订单")
    _wait_shown_for(page, "订单")
    assert _listed(page) == ["客服 1"]
    searched = [parse_qs(urlparse(u).query).get("q", [""])[0] for u in requests]
    assert searched[-1] == "订单" and all("订单".startswith(q) for q in searched), searched
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "playground-search.png"))

    # An English word from an answer, ignoring case; then a title.
    page.fill(tid("conversation-search"), "TODAY")
    _wait_shown_for(page, "TODAY")
    assert _listed(page) == ["Weather"]
    page.fill(tid("conversation-search"), "")
    _wait_shown_for(page, "")
    requests.clear()
    page.keyboard.type("refund")  # six keys in a burst: searched once the burst ends
    _wait_shown_for(page, "refund")
    assert _listed(page) == ["Refund request"]
    searched = [parse_qs(urlparse(u).query).get("q", [""])[0] for u in requests]
    assert searched[-1] == "refund" and len(searched) < len("refund"), searched

    # Clearing the box brings the whole list back.
    page.fill(tid("conversation-search"), "")
    _wait_shown_for(page, "")
    assert _listed(page) == everything

    # Nothing matches: said so, with a way back; Escape clears too.
    page.fill(tid("conversation-search"), "不存在的内容")
    _wait_shown_for(page, "不存在的内容")
    assert _listed(page) == []
    assert "No conversations match “不存在的内容”" in page.locator(tid("conversation-no-match")).inner_text()
    page.click(tid("conversation-search-clear"))
    _wait_shown_for(page, "")
    assert _listed(page) == everything and page.input_value(tid("conversation-search")) == ""
    page.fill(tid("conversation-search"), "paris")
    _wait_shown_for(page, "paris")
    page.press(tid("conversation-search"), "Escape")
    _wait_shown_for(page, "")
    assert _listed(page) == everything

    # A picked result opens its transcript.
    page.fill(tid("conversation-search"), "订单")
    _wait_shown_for(page, "订单")
    page.click(f"{tid('conversation-row')} .chat-pick")
    page.wait_for_selector(f"{tid('chat-user')}:has-text('我想查询订单状态')")
    assert [e for e in chat.console_errors if "WebSocket" not in e] == []
