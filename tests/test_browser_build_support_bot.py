"""Building the seed's customer-service bot from scratch in the browser, counting what the
user does (issue 14 measured 45 actions and three attempts for it): intent routing ->
knowledge retrieval -> answer generation, with a hand-off branch. Every drag, click, typed
field and key press counts as one action. The bot is then run both ways."""

from __future__ import annotations

import re

import pytest

from flows.demo import FAQ, FAQ_COLLECTION
from flows.models import Flow, FlowVersion
from flows.services import document_create
from runs.models import RunEvent, RunStatus
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    latest_run,
    open_page_fixture,
    tid,
)

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

TEMPLATE = "Answer the question from the FAQ.\n\nContext:\n{context}\n\nQuestion: {question}"
HANDOFF = "Of course, I am passing you to a person on our support team."


class Actions:
    """The user's actions, each counted once (a drag is one, typing into a field is one)."""

    def __init__(self, page) -> None:
        self.page = page
        self.log: list[str] = []

    def click(self, selector: str) -> None:
        self.log.append(f"click {selector}")
        self.page.click(selector)

    def fill(self, selector: str, text: str) -> None:
        self.log.append(f"type into {selector}")
        self.page.fill(selector, text)

    def drop(self, component: str, x: int, y: int) -> None:
        self.log.append(f"drag {component} onto the canvas")
        self.page.drag_and_drop(
            tid(f"palette-{component}"), ".react-flow__pane", target_position={"x": x, "y": y}
        )

    def wire(self, source: str, target: str) -> None:
        self.log.append(f"drag {source} -> {target}")
        edges = self.page.locator(".react-flow__edge").count()
        a = self.page.locator(tid(source)).bounding_box()
        b = self.page.locator(tid(target)).bounding_box()
        self.page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
        self.page.mouse.down()
        self.page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=12)
        self.page.mouse.up()
        if self.page.locator(".react-flow__edge").count() != edges + 1:
            self.page.screenshot(path=str(SCREENSHOTS / "builder-support-bot-failed-wire.png"))
            raise AssertionError(f"{source} -> {target} did not connect")


def test_the_support_bot_is_built_from_scratch_in_few_actions(
    open_page, workspace_a, alice_owner, erin_editor
):
    from accounts.models import Membership

    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    for title, content in FAQ:  # the knowledge base exists already, as in the seed
        document_create(
            workspace=workspace_a, acting=owner, title=title, content=content, collection=FAQ_COLLECTION
        )
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto("/w/acme/flows/")
    act = Actions(page)

    act.fill("#new-flow-name", "Support bot")
    act.click("button:has-text('New flow')")
    page.wait_for_url(re.compile(r"/w/acme/flows/\d+/$"))
    page.wait_for_selector(tid("palette-io.chat_input"))

    # Each dropped node opens its parameters at once: set them right away.
    act.drop("io.chat_input", 30, 25)
    act.drop("logic.router", 30, 145)
    page.wait_for_selector(tid("router-add-rule"))
    act.click(tid("router-add-rule"))
    act.fill(tid("router-rule-0-output"), "human")
    act.fill(tid("router-rule-0-pattern"), "human, person, agent, representative, call me, 人工")
    act.drop("docs.corpus", 30, 325)
    act.fill("[data-param=collection]", FAQ_COLLECTION)
    act.drop("llm.demo", 270, 25)
    act.fill("[data-param=reply]", HANDOFF)
    act.drop("retriever.bm25", 270, 165)
    act.drop("prompt.template", 270, 355)
    act.fill("[data-param=template]", TEMPLATE)
    act.drop("io.text_output", 510, 25)
    act.drop("llm.demo", 510, 165)
    act.drop("io.text_output", 510, 315)
    page.wait_for_selector(tid("in-template_1-context"))

    act.wire("out-chat_input_1-text", "in-router_1-input")
    act.wire("out-router_1-human", "in-demo_1-prompt")
    act.wire("out-demo_1-text", "in-text_output_1-text")
    act.wire("out-router_1-default", "in-bm25_1-query")
    act.wire("out-corpus_1-documents", "in-bm25_1-documents")
    act.wire("out-bm25_1-context", "in-template_1-context")
    act.wire("out-router_1-default", "in-template_1-question")
    act.wire("out-template_1-prompt", "in-demo_2-prompt")
    act.wire("out-demo_2-text", "in-text_output_2-text")
    page.screenshot(path=str(SCREENSHOTS / "builder-support-bot-wired.png"))
    assert page.locator(".react-flow__edge").count() == 9

    act.click(tid("save"))
    page.wait_for_selector(f"{tid('version')}:has-text('v1')")
    building = len(act.log)
    flow = Flow.objects.get(name="Support bot")
    version = FlowVersion.objects.get(flow=flow)
    assert len(version.graph["nodes"]) == 9 and len(version.graph["edges"]) == 9

    act.click(tid("tab-run"))
    act.fill(tid("run-input-chat_input_1"), "How do I reset my password?")
    act.click(tid("run-button"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
    page.wait_for_function(
        "() => (document.querySelector(\"[data-testid='answer']\")?.innerText || '').includes('Forgot password')"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "builder-support-bot-from-scratch.png"))
    faq_run = latest_run(workspace_a)

    act.fill(tid("run-input-chat_input_1"), "我要人工客服")
    act.click(tid("run-button"))
    page.wait_for_function(
        "() => (document.querySelector(\"[data-testid='answer']\")?.innerText || '').includes('passing you to a person')"
    )
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
    human_run = latest_run(workspace_a)
    assert faq_run.status == human_run.status == RunStatus.SUCCEEDED
    skipped = {
        e.node_id
        for e in RunEvent.objects.filter(run=human_run, event="node_finished")
        if e.payload.get("skipped")
    }
    assert {"bm25_1", "template_1", "demo_2"} <= skipped and "demo_1" not in skipped

    print(f"\nbuilt and saved in {building} actions; {len(act.log)} with the two runs")
    for number, action in enumerate(act.log, 1):
        print(f"{number:3d}. {action}")
    # Issue 14 counted 45 actions (and three attempts) to build it; one attempt here.
    assert building <= 30, act.log
    assert editor.console_errors == []
