"""The knowledge pages in a real browser against the live stack (Daphne + a Celery worker):
an editor creates a knowledge base, drops two files at once and watches both progress bars
reach "indexed" live; a reload shows where they stand; test retrieval finds a Chinese
query's document; a viewer reads without forms; another workspace's member gets a 404."""

from __future__ import annotations

import re

import pytest

from audit.models import AuditEntry
from knowledge.models import DocumentStatus, KnowledgeBase, KnowledgeDocument
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    open_page_fixture,
    tid,
)
from tests.knowledge_files import make_pdf

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

MARKDOWN = (
    "# 订单状态\n\n"
    "我想查询订单状态，请问在哪里可以看到物流信息？"
    "登录后在“我的订单”页面查看订单状态和物流。\n\n"
    "## 退款\n\n退款会在审核通过后七个工作日内原路退回。\n"
).encode()
PDF = make_pdf(
    [
        "Shipping handbook\nParcels leave the warehouse within two working days.",
        "Returns\nA return label is printed from the account page.",
    ]
)

# Every status each file's row shows, in order, recorded by the page itself at each change
# of the DOM (a sampling loop here would miss the short-lived ones on a slow machine).
WATCH_ROWS = """() => {
  window.__rowStatuses = {};
  const note = () => {
    for (const row of document.querySelectorAll("[data-testid='document-rows'] tr[data-status]")) {
      const name = row.querySelector("[data-cell='name']").textContent;
      const seen = (window.__rowStatuses[name] = window.__rowStatuses[name] || []);
      if (seen[seen.length - 1] !== row.dataset.status) seen.push(row.dataset.status);
    }
  };
  note();
  new MutationObserver(note).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"],
  });
}"""

ORDER = ["uploading", "queued", "parsing", "embedding", "indexed"]


def _row(page, name: str):
    return page.locator("[data-testid='document-rows'] tr", has_text=name)


def _moves_forward(statuses: list[str]) -> bool:
    """Uploading first, indexed last, never back to an earlier stage."""
    positions = [ORDER.index(s) for s in statuses]
    return (
        statuses[0] == "uploading" and statuses[-1] == "indexed" and positions == sorted(positions)
    )


def test_two_files_upload_at_once_and_both_bars_reach_indexed(
    open_page, workspace_a, alice_owner, erin_editor, bob_viewer
):
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto("/w/acme/flows/")
    page.click("nav >> text=Knowledge")
    page.wait_for_selector("h1:has-text('Knowledge bases')")
    page.fill("#new-name", "Support FAQ")
    page.fill("#new-description", "What customers ask, in Chinese and English")
    assert page.input_value("#new-size") == "800" and page.input_value("#new-overlap") == "100"
    page.click("button:has-text('Create knowledge base')")
    page.wait_for_url(re.compile(r"/w/acme/knowledge/\d+/$"))
    kb = KnowledgeBase.objects.get(workspace=workspace_a, name="Support FAQ")
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")

    page.evaluate(WATCH_ROWS)
    page.set_input_files(
        tid("upload-input"),
        [
            {"name": "订单状态.md", "mimeType": "text/markdown", "buffer": MARKDOWN},
            {"name": "handbook.pdf", "mimeType": "application/pdf", "buffer": PDF},
            # refused in the page, on its own row, without holding up the other two
            {"name": "setup.exe", "mimeType": "application/octet-stream", "buffer": b"MZ\x90"},
        ],
    )
    refused = _row(page, "setup.exe")
    assert refused.get_attribute("data-status") == "refused"
    assert "cannot be read" in refused.locator("[data-cell='error']").inner_text()
    for name in ("订单状态.md", "handbook.pdf"):
        page.locator("tr[data-status='indexed']", has_text=name).wait_for(timeout=90_000)
    statuses = page.evaluate("() => window.__rowStatuses")
    assert _moves_forward(statuses["订单状态.md"]), statuses
    assert _moves_forward(statuses["handbook.pdf"]), statuses
    for name in ("订单状态.md", "handbook.pdf"):
        row = _row(page, name)
        assert row.locator("progress").evaluate("bar => bar.value") == 1
        assert row.locator(tid("doc-status")).inner_text() == "Indexed"
    assert _row(page, "handbook.pdf").locator("[data-cell='pages']").inner_text() == "2"
    # Retry is for failed documents only; a refused file has nothing to act on.
    assert page.locator("button:has-text('Retry'):visible").count() == 0
    assert refused.locator("button:visible").count() == 0
    assert page.locator("[data-count='documents']").inner_text() == "2"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "knowledge-upload.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(SCREENSHOTS / "knowledge-upload-dark.png"))
    page.emulate_media(color_scheme="light")
    documents = KnowledgeDocument.objects.filter(knowledge_base=kb)
    assert sorted(documents.values_list("name", "status")) == [
        ("handbook.pdf", DocumentStatus.INDEXED),
        ("订单状态.md", DocumentStatus.INDEXED),
    ]

    # A reload shows where they stand, from the rows and the socket's snapshot.
    page.reload()
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    for name in ("订单状态.md", "handbook.pdf"):
        assert _row(page, name).get_attribute("data-status") == "indexed"
    assert _row(page, "setup.exe").count() == 0  # refused: never stored

    # Test retrieval: a Chinese word inside a clause finds its document.
    page.fill(tid("search-query"), "订单")
    assert page.locator("#search-mode option[value='vector']").is_disabled()
    page.select_option(tid("search-mode"), "keyword")
    page.click(tid("search-submit"))
    first = page.locator(tid("hit")).first
    first.wait_for()
    assert "订单状态.md" in first.locator(".hit-meta").inner_text()
    assert "订单状态" in first.locator(".hit-text").inner_text()
    page.select_option(tid("search-mode"), "hybrid")
    page.fill(tid("search-query"), "return label")
    page.click(tid("search-submit"))
    page.wait_for_selector(f"{tid('search-summary')}:has-text('keyword search')")
    hit = page.locator(tid("hit")).first
    assert "handbook.pdf" in hit.inner_text() and "page 2" in hit.inner_text()
    page.locator(tid("test-retrieval")).scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "knowledge-search.png"))

    editor.goto("/w/acme/knowledge/")
    row = page.locator(f"tr[data-kb='{kb.pk}']")
    assert "2 indexed" in row.inner_text() and "keyword only" in row.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "knowledge-list.png"), full_page=True)
    assert editor.console_errors == []

    # A viewer reads both pages, searches, and sees no form to change anything.
    viewer = open_page(bob_viewer)
    viewer.goto(f"/w/acme/knowledge/{kb.pk}/")
    viewer.page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    assert viewer.page.locator("main form[method='post']").count() == 0
    assert viewer.page.locator(tid("dropzone")).count() == 0
    assert _row(viewer.page, "handbook.pdf").get_attribute("data-status") == "indexed"
    viewer.goto("/w/acme/knowledge/")
    assert viewer.page.locator("main form[method='post']").count() == 0
    assert viewer.console_errors == []


def test_a_member_of_another_workspace_gets_404_for_the_page(
    open_page, workspace_a, workspace_b, alice_owner, mallory_owner
):
    from tests.knowledge_helpers import make_kb

    kb = make_kb(workspace_a, alice_owner, "Private FAQ")
    outsider = open_page(mallory_owner)
    response = outsider.goto(f"/w/acme/knowledge/{kb.pk}/")
    assert response.status == 404
    assert "Private FAQ" not in outsider.page.content()
    denial = AuditEntry.objects.filter(action="access.denied").order_by("-seq").first()
    assert denial.actor_id == mallory_owner.pk and denial.target == "workspace:acme"


def _knowledge_flow(workspace, user, kb_id: int):
    """chat input -> knowledge retrieval (keyword) -> its context as the answer."""
    from flows.services import flow_create
    from tests.knowledge_helpers import membership

    node = {"x": 0, "y": 0}
    return flow_create(
        workspace=workspace,
        acting=membership(workspace, user),
        name="Answers from the FAQ",
        graph={
            "nodes": [
                {
                    "id": "chat_input_1",
                    "component": "io.chat_input",
                    "params": {},
                    "position": node,
                },
                {
                    "id": "knowledge_1",
                    "component": "retriever.knowledge",
                    "params": {"knowledge_base": kb_id, "mode": "keyword", "top_k": 2},
                    "position": {"x": 260, "y": 0},
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
                    "target": "knowledge_1",
                    "target_port": "query",
                },
                {
                    "source": "knowledge_1",
                    "source_port": "context",
                    "target": "text_output_1",
                    "target_port": "text",
                },
            ],
        },
        note="v1",
    )


def test_the_run_view_cites_what_retrieval_found(open_page, workspace_a, alice_owner, erin_editor):
    import time

    from knowledge.services import document_create_text
    from tests.knowledge_helpers import FAQ_ZH, make_kb, membership

    kb = make_kb(workspace_a, alice_owner, "常见问题")
    for name, text in FAQ_ZH.items():
        document_create_text(
            workspace=workspace_a,
            acting=membership(workspace_a, alice_owner),
            kb=kb,
            name=name,
            text=text,
        )
    documents = KnowledgeDocument.objects.filter(knowledge_base=kb)
    deadline = time.monotonic() + 90  # the live worker ingests them
    while documents.exclude(status=DocumentStatus.INDEXED).exists():
        assert time.monotonic() < deadline, list(documents.values_list("name", "status"))
        time.sleep(0.2)
    flow = _knowledge_flow(workspace_a, alice_owner, kb.pk)

    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    # The node picks its knowledge base by name from the workspace's list.
    page.locator(tid("node-knowledge_1")).click()
    picker = page.locator("select[data-param='knowledge_base']")
    picker.locator("option", has_text="常见问题").wait_for(state="attached")
    assert picker.input_value() == str(kb.pk)
    assert "常见问题 (keyword only)" in picker.inner_text()

    page.click(tid("tab-run"))
    page.fill(tid("run-input-chat_input_1"), "订单在哪里查看？")
    page.click(tid("run-button"))
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']")
    citations = page.locator(tid("citation"))
    citations.first.wait_for()
    assert 1 <= citations.count() <= 2  # top_k 2
    first = citations.first.inner_text()
    assert "订单状态.txt" in first and "score" in first
    # Sources sit right under the answer.
    assert (
        page.evaluate(
            "() => document.querySelector(\"[data-testid='answer']\").nextElementSibling.dataset.testid"
        )
        == "sources"
    )
    page.screenshot(path=str(SCREENSHOTS / "run-citations.png"))
    assert editor.console_errors == []


# Drops files on the upload zone as a browser does: a drop event whose DataTransfer holds
# them (arguments: name, text, name, text, ...).
DROP_FILES = """(pairs) => {
  const transfer = new DataTransfer();
  for (let i = 0; i < pairs.length; i += 2) {
    const bytes = Uint8Array.from(pairs[i + 1], (c) => c.charCodeAt(0) & 0xff);
    transfer.items.add(new File([bytes], pairs[i]));
  }
  const zone = document.querySelector("[data-testid='dropzone']");
  zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
}"""


# While `window.__blockSockets` is set, new sockets go nowhere (and fail), as when the
# server is unreachable; the page keeps trying with backoff.
BLOCKABLE_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, ...rest) {
      super(window.__blockSockets ? "ws://127.0.0.1:9/blocked" : url, ...rest);
    }
  };
})();
"""


def test_a_failed_file_says_why_and_a_dropped_socket_catches_up_on_reconnect(
    open_page, workspace_a, alice_owner, erin_editor
):
    from knowledge.services import document_delete
    from tests.knowledge_helpers import make_kb, membership

    kb = make_kb(workspace_a, alice_owner, "Manuals")
    editor = open_page(erin_editor)
    editor.context.add_init_script(BLOCKABLE_SOCKETS)
    page = editor.page
    editor.goto(f"/w/acme/knowledge/{kb.pk}/")
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    page.set_input_files(
        tid("upload-input"),
        [
            {"name": "notes.md", "mimeType": "text/markdown", "buffer": b"# Notes\n\nKeep it."},
            {"name": "scan.pdf", "mimeType": "application/pdf", "buffer": make_pdf(["", ""])},
        ],
    )
    page.locator("tr[data-status='indexed']", has_text="notes.md").wait_for(timeout=90_000)
    failed = page.locator("tr[data-status='failed']", has_text="scan.pdf")
    failed.wait_for(timeout=90_000)
    assert failed.locator(tid("doc-status")).inner_text() == "Failed"
    assert failed.locator("[data-cell='error']").inner_text()  # the reason, in a sentence
    assert failed.locator("button:has-text('Retry')").is_visible()

    # Dropped on the zone (a real drop event carrying files), and refused by the server
    # on their own rows: the same bytes again, and a "PDF" that is a PNG.
    page.evaluate(DROP_FILES, ["notes.md", "# Notes\n\nKeep it."])
    duplicate = page.locator("tr[data-status='refused']", has_text="notes.md")
    duplicate.wait_for()
    assert "here already as “notes.md”" in duplicate.locator("[data-cell='error']").inner_text()
    page.evaluate(DROP_FILES, ["photo.pdf", "\u0089PNG\r\n\u001a\n"])
    lying = page.locator("tr[data-status='refused']", has_text="photo.pdf")
    lying.wait_for()
    assert lying.locator("[data-cell='error']").inner_text()
    assert KnowledgeDocument.objects.filter(knowledge_base=kb).count() == 2

    # The socket drops and cannot come back for a while; meanwhile a document is deleted.
    page.evaluate("() => { window.__blockSockets = true; window.__sockets.at(-1).close(); }")
    page.wait_for_selector(f"{tid('connection')}[data-state='closed']")
    notes = KnowledgeDocument.objects.get(knowledge_base=kb, name="notes.md")
    document_delete(
        workspace=workspace_a, acting=membership(workspace_a, alice_owner), document=notes
    )
    stored_notes = page.locator("tr[data-document]", has_text="notes.md")
    assert stored_notes.count() == 1  # nothing told the page yet
    page.evaluate("() => { window.__blockSockets = false; }")
    # Back: the snapshot on connect is the truth.
    page.wait_for_selector(f"{tid('connection')}[data-state='open']", timeout=60_000)
    stored_notes.wait_for(state="detached")
    assert _row(page, "scan.pdf").get_attribute("data-status") == "failed"
    assert page.locator("[data-count='documents']").inner_text() == "1"
    # The only errors: the blocked connection attempts and the refused upload (a 400).
    unexpected = [
        e
        for e in editor.console_errors
        if "/blocked" not in e and "status of 400" not in e and not e.startswith("HTTP 400")
    ]
    assert unexpected == []
