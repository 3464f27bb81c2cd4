"""The knowledge-base pages (knowledge/views.py): the list and one knowledge base.

Editors manage from the pages; viewers read them without any form; another workspace's
knowledge base is a 404 (recorded); bad form input says why and changes nothing. The
browser behaviour (uploads, live progress, test retrieval) is in
test_browser_knowledge.py."""

from __future__ import annotations

import json
import re

import pytest

from audit.models import AuditEntry
from flows.services import credential_create
from knowledge.models import DocumentStatus, KnowledgeBase, KnowledgeDocument
from knowledge.services import document_create_text
from tests.knowledge_helpers import make_kb, membership

pytestmark = pytest.mark.django_db

POST_FORM = re.compile(r'<form method="post"')


def _main(html: str) -> str:
    """The page's own content (the header has the sign-out form)."""
    return html[html.index('<main id="main"') :]


def _config(response) -> dict:
    match = re.search(
        r'<script id="knowledge-config" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match, "the page hands its script a JSON config"
    return json.loads(match.group(1))


def _document(kb: KnowledgeBase, user, name: str, text: str) -> KnowledgeDocument:
    return document_create_text(
        workspace=kb.workspace, acting=membership(kb.workspace, user), kb=kb, name=name, text=text
    ).document


# --- the list ----------------------------------------------------------------------------------
def test_the_nav_leads_to_knowledge_between_flows_and_runs(client_for, workspace_a, bob_viewer):
    html = client_for(bob_viewer).get("/w/acme/flows/").content.decode()
    nav = html[html.index('aria-label="Workspace"') :]
    assert nav.index(">Flows<") < nav.index(">Knowledge<") < nav.index(">Runs<")
    assert 'href="/w/acme/knowledge/"' in nav


def test_list_shows_counts_status_and_embeddings(client_for, workspace_a, alice_owner, erin_editor):
    acting = membership(workspace_a, alice_owner)
    credential = credential_create(
        workspace=workspace_a,
        acting=acting,
        name="Embedder",
        provider="openai",
        base_url="https://llm.example.com/v1",
        api_key="sk-page",
    )
    faq = make_kb(workspace_a, alice_owner, "FAQ")
    manuals = make_kb(
        workspace_a,
        alice_owner,
        "Manuals",
        embedding_credential_id=credential.pk,
        embedding_model="text-embedding-3-small",
    )
    indexed = _document(faq, alice_owner, "a.txt", "alpha")
    KnowledgeDocument.objects.filter(pk=indexed.pk).update(
        status=DocumentStatus.INDEXED, chunk_count=3
    )
    failed = _document(faq, alice_owner, "b.txt", "beta")
    KnowledgeDocument.objects.filter(pk=failed.pk).update(status=DocumentStatus.FAILED)
    _document(faq, alice_owner, "c.txt", "gamma")  # queued

    response = client_for(erin_editor).get("/w/acme/knowledge/")
    assert response.status_code == 200
    html = response.content.decode()
    faq_row = html[html.index(f'data-kb="{faq.pk}"') :].split("</tr>")[0]
    assert "<td>3</td>" in faq_row  # documents; and 3 chunks
    assert "1 indexed" in faq_row and "1 in progress" in faq_row and "1 failed" in faq_row
    assert "keyword only" in faq_row
    manuals_row = html[html.index('data-kb="') :].split("</tbody>")[0]
    assert "Embedder · <code>text-embedding-3-small</code>" in manuals_row
    assert "New knowledge base" in html
    assert "50 MB per file" in html  # the installation's limits, read-only
    # With embeddings, every mode is offered, hybrid first; the settings show the picked one.
    detail = client_for(erin_editor).get(f"/w/acme/knowledge/{manuals.pk}/").content.decode()
    assert '<option value="vector">vector</option>' in detail
    assert '<option value="hybrid" selected>hybrid</option>' in detail
    assert f'<option value="{credential.pk}" selected>Embedder (' in detail


def test_list_page_queries_do_not_grow_with_knowledge_bases(
    client_for, workspace_a, alice_owner, django_assert_max_num_queries
):
    client = client_for(alice_owner)
    for i in range(3):
        _document(make_kb(workspace_a, alice_owner, f"KB {i}"), alice_owner, "d.txt", f"t{i}")
    with django_assert_max_num_queries(12) as few:
        client.get("/w/acme/knowledge/")
    for i in range(3, 9):
        _document(make_kb(workspace_a, alice_owner, f"KB {i}"), alice_owner, "d.txt", f"t{i}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get("/w/acme/knowledge/").status_code == 200


def test_editor_creates_renames_and_deletes_a_knowledge_base(client_for, workspace_a, erin_editor):
    client = client_for(erin_editor)
    response = client.post(
        "/w/acme/knowledge/",
        {
            "action": "create",
            "name": "Support FAQ",
            "description": "What customers ask",
            "embedding_credential": "",
            "embedding_model": "",
            "chunk_size": "600",
            "chunk_overlap": "60",
        },
    )
    kb = KnowledgeBase.objects.get(workspace=workspace_a)
    assert response.status_code == 302 and response["Location"] == f"/w/acme/knowledge/{kb.pk}/"
    assert (kb.name, kb.chunk_size, kb.chunk_overlap, kb.has_embeddings) == (
        "Support FAQ",
        600,
        60,
        False,
    )
    assert AuditEntry.objects.filter(action="knowledge_base.create").count() == 1

    client.post("/w/acme/knowledge/", {"action": "rename", "kb": kb.pk, "name": "常见问题"})
    kb.refresh_from_db()
    assert kb.name == "常见问题"
    page = client.get("/w/acme/knowledge/").content.decode()
    assert "常见问题" in page and "Renamed to “常见问题”." in page

    client.post("/w/acme/knowledge/", {"action": "delete", "kb": kb.pk})
    assert not KnowledgeBase.objects.exists()
    assert AuditEntry.objects.filter(action="knowledge_base.delete").count() == 1


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"name": ""}, "Name: This field is required."),
        ({"chunk_size": "10"}, "Chunk size: From 100 to 8000 characters."),
        ({"chunk_size": "lots"}, None),  # not a number: the default, so it is created
        ({"chunk_overlap": "700"}, "Chunk overlap: From 0 to less than half the chunk size."),
        ({"embedding_credential": "999999"}, "No such credential in this workspace."),
        ({"embedding_credential": "x"}, "No such credential in this workspace."),
    ],
)
def test_bad_create_input_says_why_and_creates_nothing(
    client_for, workspace_a, erin_editor, fields, says
):
    form = {"action": "create", "name": "KB", "chunk_size": "800", "chunk_overlap": "100"}
    response = client_for(erin_editor).post("/w/acme/knowledge/", {**form, **fields}, follow=True)
    assert response.status_code == 200
    if says is None:
        assert KnowledgeBase.objects.get().chunk_size == 800
        return
    assert says in response.content.decode()
    assert not KnowledgeBase.objects.exists()
    assert not AuditEntry.objects.filter(action="knowledge_base.create").exists()


def test_a_credential_of_another_workspace_is_refused(
    client_for, workspace_a, workspace_b, erin_editor, mallory_owner
):
    theirs = credential_create(
        workspace=workspace_b,
        acting=membership(workspace_b, mallory_owner),
        name="Theirs",
        provider="openai",
        base_url="https://llm.example.com/v1",
        api_key="sk-theirs",
    )
    response = client_for(erin_editor).post(
        "/w/acme/knowledge/",
        {
            "action": "create",
            "name": "KB",
            "embedding_credential": str(theirs.pk),
            "embedding_model": "m",
        },
        follow=True,
    )
    assert "No such credential in this workspace." in response.content.decode()
    assert not KnowledgeBase.objects.exists()


def test_viewer_reads_the_pages_without_any_form(client_for, workspace_a, alice_owner, bob_viewer):
    kb = make_kb(workspace_a, alice_owner, "FAQ")
    document = _document(kb, alice_owner, "a.txt", "alpha")
    KnowledgeDocument.objects.filter(pk=document.pk).update(
        status=DocumentStatus.FAILED, error_message="The file has no text to index."
    )
    client = client_for(bob_viewer)
    listing = _main(client.get("/w/acme/knowledge/").content.decode())
    assert "FAQ" in listing and not POST_FORM.search(listing)
    assert "New knowledge base" not in listing
    detail = client.get(f"/w/acme/knowledge/{kb.pk}/")
    html = _main(detail.content.decode())
    assert detail.status_code == 200
    assert "a.txt" in html and "The file has no text to index." in html
    assert not POST_FORM.search(html)  # no settings, retry, delete or upload
    assert 'data-testid="dropzone"' not in html and 'id="document-row"' not in html
    assert 'data-testid="test-retrieval"' in html  # reading includes searching
    assert _config(detail)["canEdit"] is False


def test_viewer_posts_are_refused_and_change_nothing(
    client_for, workspace_a, alice_owner, bob_viewer
):
    kb = make_kb(workspace_a, alice_owner, "FAQ")
    document = _document(kb, alice_owner, "a.txt", "alpha")
    client = client_for(bob_viewer)
    posts = [
        ("/w/acme/knowledge/", {"action": "create", "name": "Nope"}),
        ("/w/acme/knowledge/", {"action": "rename", "kb": kb.pk, "name": "Nope"}),
        ("/w/acme/knowledge/", {"action": "delete", "kb": kb.pk}),
        (f"/w/acme/knowledge/{kb.pk}/", {"action": "settings", "name": "Nope"}),
        (f"/w/acme/knowledge/{kb.pk}/", {"action": "delete_document", "document": document.pk}),
    ]
    for url, form in posts:
        assert client.post(url, form).status_code == 403, form
    kb.refresh_from_db()
    assert kb.name == "FAQ" and KnowledgeDocument.objects.filter(pk=document.pk).exists()


# --- one knowledge base --------------------------------------------------------------------
def test_detail_page_shows_the_documents_and_hands_its_script_the_routes(
    client_for, workspace_a, alice_owner, erin_editor
):
    kb = make_kb(workspace_a, alice_owner, "FAQ")
    document = _document(kb, alice_owner, "订单状态.txt", "我想查询订单状态")
    response = client_for(erin_editor).get(f"/w/acme/knowledge/{kb.pk}/")
    html = response.content.decode()
    config = _config(response)
    assert config["api"] == f"/api/w/acme/knowledge-bases/{kb.pk}"
    assert config["socket"] == f"/ws/w/acme/knowledge?kb={kb.pk}"
    assert config["canEdit"] is True and config["maxFileBytes"] == 50 * 1024 * 1024
    assert {"pdf", "docx", "md", "txt", "csv", "html"} <= set(config["extensions"])
    assert f'data-document="{document.pk}" data-status="queued"' in html
    assert 'data-testid="dropzone"' in html and 'multiple accept=".csv,.docx' in html
    assert "Up to 50 MB per file" in html
    # keyword-only: vector is offered, disabled, with the reason
    assert '<option value="vector" disabled>vector (no embeddings)' in html
    assert '<script src="/static/knowledge.js" defer></script>' in html


def test_settings_change_says_it_re_indexes(client_for, workspace_a, alice_owner, erin_editor):
    kb = make_kb(workspace_a, alice_owner, "FAQ")
    document = _document(kb, alice_owner, "a.txt", "alpha")
    KnowledgeDocument.objects.filter(pk=document.pk).update(status=DocumentStatus.INDEXED)
    client = client_for(erin_editor)
    form = {
        "action": "settings",
        "name": "FAQ",
        "description": "",
        "embedding_credential": "",
        "embedding_model": "",
        "chunk_size": "800",
        "chunk_overlap": "100",
    }
    same = client.post(f"/w/acme/knowledge/{kb.pk}/", form, follow=True).content.decode()
    assert "Settings saved." in same and "indexed again" not in same
    document.refresh_from_db()
    assert document.status == DocumentStatus.INDEXED

    changed = client.post(
        f"/w/acme/knowledge/{kb.pk}/", {**form, "chunk_size": "400"}, follow=True
    ).content.decode()
    assert "Every document is being indexed again" in changed
    document.refresh_from_db()
    kb.refresh_from_db()
    assert (kb.chunk_size, document.status) == (400, DocumentStatus.QUEUED)


def test_retry_and_delete_a_document(client_for, workspace_a, alice_owner, erin_editor):
    kb = make_kb(workspace_a, alice_owner, "FAQ")
    document = _document(kb, alice_owner, "a.txt", "alpha")
    KnowledgeDocument.objects.filter(pk=document.pk).update(
        status=DocumentStatus.FAILED, error_code="embedding_failed", error_message="Boom."
    )
    client = client_for(erin_editor)
    page = client.get(f"/w/acme/knowledge/{kb.pk}/").content.decode()
    assert "Retry</button>" in page
    client.post(f"/w/acme/knowledge/{kb.pk}/", {"action": "retry", "document": document.pk})
    document.refresh_from_db()
    assert document.status == DocumentStatus.QUEUED and document.error_message == ""
    # retrying it again while it is not failed is fine; indexed is refused with a sentence
    KnowledgeDocument.objects.filter(pk=document.pk).update(status=DocumentStatus.INDEXED)
    refused = client.post(
        f"/w/acme/knowledge/{kb.pk}/", {"action": "retry", "document": document.pk}, follow=True
    )
    assert "This document is indexed already." in refused.content.decode()
    client.post(
        f"/w/acme/knowledge/{kb.pk}/", {"action": "delete_document", "document": document.pk}
    )
    assert not KnowledgeDocument.objects.exists()
    assert AuditEntry.objects.filter(action="knowledge_document.delete").count() == 1


def test_another_workspaces_knowledge_base_is_404_and_recorded(
    client_for, workspace_a, workspace_b, alice_owner, mallory_owner
):
    ours = make_kb(workspace_a, alice_owner, "Ours")
    theirs = make_kb(workspace_b, mallory_owner, "Theirs")
    their_document = _document(theirs, mallory_owner, "t.txt", "theirs")
    outsider = client_for(mallory_owner)
    # A member of B on A's page: the workspace itself is not theirs.
    assert outsider.get(f"/w/acme/knowledge/{ours.pk}/").status_code == 404
    denial = AuditEntry.objects.filter(action="access.denied").order_by("-seq").first()
    assert denial.actor_id == mallory_owner.pk and denial.target == "workspace:acme"
    assert outsider.get("/w/acme/knowledge/").status_code == 404
    # A's owner asking for B's knowledge base under A's URL: 404, recorded as a probe.
    owner = client_for(alice_owner)
    assert owner.get(f"/w/acme/knowledge/{theirs.pk}/").status_code == 404
    denial = AuditEntry.objects.filter(action="access.denied").order_by("-seq").first()
    assert denial.actor_id == alice_owner.pk and denial.after == {"reason": "other_workspace"}
    for url, form in [
        ("/w/acme/knowledge/", {"action": "delete", "kb": theirs.pk}),
        ("/w/acme/knowledge/", {"action": "rename", "kb": theirs.pk, "name": "Mine"}),
        (f"/w/acme/knowledge/{theirs.pk}/", {"action": "settings", "name": "Mine"}),
        (
            f"/w/acme/knowledge/{ours.pk}/",
            {"action": "delete_document", "document": their_document.pk},
        ),
        (f"/w/acme/knowledge/{ours.pk}/", {"action": "retry", "document": their_document.pk}),
    ]:
        assert owner.post(url, form).status_code == 404, form
    theirs.refresh_from_db()
    assert (
        theirs.name == "Theirs" and KnowledgeDocument.objects.filter(pk=their_document.pk).exists()
    )


def test_anonymous_is_sent_to_login(client_for, workspace_a, alice_owner):
    kb = make_kb(workspace_a, alice_owner, "FAQ")
    for url in ("/w/acme/knowledge/", f"/w/acme/knowledge/{kb.pk}/"):
        response = client_for(None).get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
