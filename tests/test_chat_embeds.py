"""Embeds (chat.embeds, chat/embed_views.py, chat/embed_api.py): a published flow as a chat
on websites. Managing them (API and page, roles, tenancy, audit), and what a visitor's
browser may and may not do: allowed origins, the visitor token, conversations per visitor,
rate limits, an unpublished flow, a member who left, what a visitor sees of a run."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from accounts.models import Membership, Role
from audit.models import AuditEntry
from chat import embeds
from chat.models import Conversation, ConversationTurn, Embed
from chat.services import flow_publish
from runs.models import Run
from tests import flowgraphs

pytestmark = pytest.mark.django_db

SITE = "https://shop.example.com"
OWN = "http://testserver"


def _bearer(token: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}", "content_type": "application/json"}


def _published_flow(workspace: Any, user: Any) -> Any:
    flow = flowgraphs.demo_flow(workspace, user, reply="Hello there", delay_ms=0)
    acting = Membership.objects.get(workspace=workspace, user=user)
    flow_publish(workspace=workspace, acting=acting, flow=flow, version_number=1)
    return flow


def _embed(workspace: Any, user: Any, flow: Any, **changes: Any) -> Embed:
    settings = {"name": "Help", "allowed_origins": [SITE], **changes}
    return embeds.embed_create(
        workspace=workspace,
        acting=Membership.objects.get(workspace=workspace, user=user),
        flow=flow,
        settings=embeds.EmbedSettings(**settings),
    )


class Visitor:
    """A website visitor's browser: the chat page's requests, with an Origin header."""

    def __init__(self, embed: Embed, origin: str | None = OWN) -> None:
        self.client = Client()
        self.base = f"/embed/{embed.public_id}/api"
        self.origin = origin
        self.token: str | None = None

    def headers(self) -> dict[str, Any]:
        headers: dict[str, Any] = {}
        if self.origin:
            headers["HTTP_ORIGIN"] = self.origin
        if self.token:
            headers["HTTP_X_FLOWDECK_VISITOR"] = self.token
        return headers

    def start(self) -> Any:
        response = self.client.post(
            f"{self.base}/visitor", "{}", "application/json", **self.headers()
        )
        if response.status_code == 200:
            self.token = response.json()["visitor"]
        return response

    def say(self, message: str, conversation_id: str | None = None) -> Any:
        body = {"message": message, "conversation_id": conversation_id}
        return self.client.post(
            f"{self.base}/messages", json.dumps(body), "application/json", **self.headers()
        )

    def get(self, path: str) -> Any:
        return self.client.get(f"{self.base}/{path}", **self.headers())


# --- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "origin"),
    [
        ("https://Shop.Example.com", "https://shop.example.com"),
        ("https://shop.example.com:443/", "https://shop.example.com"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_origins_are_normalised(raw, origin):
    assert embeds.clean_origin(raw) == origin


@pytest.mark.parametrize(
    "raw",
    [
        "shop.example.com",
        "ftp://shop.example.com",
        "https://shop.example.com/path",
        "https://*.example.com",
        "https://user@shop.example.com",
        "https://",
        "javascript:alert(1)",
    ],
)
def test_what_is_not_an_origin_is_refused(raw):
    with pytest.raises(ValidationError):
        embeds.clean_origin(raw)


def test_create_through_the_api_is_audited_and_gives_the_snippets_parts(
    workspace_a, erin_editor, token_for
):
    flow = _published_flow(workspace_a, erin_editor)
    response = Client().post(
        f"/api/w/acme/flows/{flow.pk}/embeds",
        json.dumps({"name": "Help centre", "allowed_origins": [SITE, "https://SHOP.example.com"]}),
        **_bearer(token_for(workspace_a, erin_editor)),
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["allowed_origins"] == [SITE]
    assert body["public_id"].startswith("emb_") and len(body["public_id"]) > 20
    assert body["chat_path"] == f"/embed/{body['public_id']}/"
    assert body["title"] == flow.name  # the flow's name unless one is given
    entry = AuditEntry.objects.get(action="embed.create")
    assert entry.target == f"embed:{body['id']}" and entry.after["allowed_origins"] == [SITE]


def test_bad_settings_change_nothing(workspace_a, erin_editor, token_for):
    flow = _published_flow(workspace_a, erin_editor)
    token = token_for(workspace_a, erin_editor)
    for body in (
        {"name": "x", "allowed_origins": []},
        {"name": "x", "allowed_origins": ["not an origin"]},
        {"name": "", "allowed_origins": [SITE]},
        {"name": "x", "allowed_origins": [SITE], "accent_color": "red"},
        {"name": "x", "allowed_origins": [SITE], "visitor_runs_per_minute": 0},
    ):
        response = Client().post(
            f"/api/w/acme/flows/{flow.pk}/embeds", json.dumps(body), **_bearer(token)
        )
        assert response.status_code in (400, 422), (body, response.content)
        assert "detail" in response.json()
    assert not Embed.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="embed.").exists()


def test_viewers_list_but_do_not_manage_and_other_workspaces_see_nothing(
    workspace_a, erin_editor, bob_viewer, workspace_b, mallory_owner, token_for
):
    flow = _published_flow(workspace_a, erin_editor)
    embed = _embed(workspace_a, erin_editor, flow)
    viewer = token_for(workspace_a, bob_viewer)
    listed = Client().get(f"/api/w/acme/flows/{flow.pk}/embeds", **_bearer(viewer))
    assert [e["public_id"] for e in listed.json()] == [embed.public_id]
    refused = Client().delete(f"/api/w/acme/embeds/{embed.pk}", **_bearer(viewer))
    assert refused.status_code == 403

    other = token_for(workspace_b, mallory_owner)
    slug = workspace_b.slug
    assert (
        Client().get(f"/api/w/{slug}/flows/{flow.pk}/embeds", **_bearer(other)).status_code == 404
    )
    body = json.dumps({"name": "mine", "allowed_origins": ["https://evil.example"]})
    assert (
        Client().put(f"/api/w/{slug}/embeds/{embed.pk}", body, **_bearer(other)).status_code == 404
    )
    assert Client().delete(f"/api/w/{slug}/embeds/{embed.pk}", **_bearer(other)).status_code == 404
    embed.refresh_from_db()
    assert embed.name == "Help" and embed.allowed_origins == [SITE]


def test_update_and_delete_through_the_api_are_audited(workspace_a, erin_editor, token_for):
    flow = _published_flow(workspace_a, erin_editor)
    embed = _embed(workspace_a, erin_editor, flow)
    token = token_for(workspace_a, erin_editor)
    body = {"name": "Help", "allowed_origins": [SITE, "https://blog.example.com"], "enabled": False}
    response = Client().put(f"/api/w/acme/embeds/{embed.pk}", json.dumps(body), **_bearer(token))
    assert response.status_code == 200 and response.json()["enabled"] is False
    update = AuditEntry.objects.get(action="embed.update")
    assert update.before["enabled"] is True and update.after["enabled"] is False
    assert Client().delete(f"/api/w/acme/embeds/{embed.pk}", **_bearer(token)).status_code == 204
    assert not Embed.objects.exists()
    assert AuditEntry.objects.filter(action="embed.delete", target=f"embed:{embed.pk}").exists()


def test_the_embed_page_creates_edits_and_deletes(workspace_a, erin_editor, bob_viewer, client_for):
    flow = _published_flow(workspace_a, erin_editor)
    editor = client_for(erin_editor)
    url = f"/w/acme/flows/{flow.pk}/embeds/"
    form = {
        "action": "create",
        "name": "Help centre",
        "allowed_origins": f"{SITE}\nhttp://localhost:3000",
        "title": "Ask us",
        "accent_color": "#112233",
        "visitor_runs_per_minute": "3",
        "runs_per_minute": "30",
        "show_sources": "on",
        "enabled": "on",
    }
    assert editor.post(url, form).status_code == 302
    embed = Embed.objects.get()
    assert embed.allowed_origins == [SITE, "http://localhost:3000"]
    assert (embed.title, embed.accent_color, embed.visitor_runs_per_minute) == (
        "Ask us",
        "#112233",
        3,
    )
    page = editor.get(url).content.decode()
    assert f'data-embed="{embed.public_id}"' in page and "flowdeck-embed.js" in page
    assert f"/embed/{embed.public_id}/" in page

    bad = editor.post(
        url, {**form, "action": "update", "embed": embed.pk, "allowed_origins": "nope"}, follow=True
    )
    assert "is not an origin" in bad.content.decode()
    embed.refresh_from_db()
    assert embed.allowed_origins == [SITE, "http://localhost:3000"]

    editor.post(url, {**form, "action": "update", "embed": embed.pk, "enabled": "off"})
    embed.refresh_from_db()
    assert embed.enabled is False

    viewer = client_for(bob_viewer)
    assert viewer.get(url).status_code == 200
    assert viewer.post(url, {"action": "delete", "embed": embed.pk}).status_code == 403
    editor.post(url, {"action": "delete", "embed": embed.pk})
    assert not Embed.objects.exists()


# --- the visitor's side ---------------------------------------------------------------------
def test_the_chat_page_may_be_framed_only_by_the_allowed_websites(workspace_a, erin_editor):
    flow = _published_flow(workspace_a, erin_editor)
    embed = _embed(workspace_a, erin_editor, flow, allowed_origins=[SITE, "http://localhost:3000"])
    response = Client().get(f"/embed/{embed.public_id}/")
    assert response.status_code == 200
    assert "X-Frame-Options" not in response
    policy = response["Content-Security-Policy"]
    ancestors = next(p for p in policy.split(";") if "frame-ancestors" in p).split()
    assert ancestors[1:] == ["'self'", SITE, "http://localhost:3000"]
    # Every other page still refuses to be framed.
    assert Client().get("/accounts/login/")["X-Frame-Options"] == "DENY"
    assert Client().get("/embed/emb_unknown/").status_code == 404


def test_a_visitor_chats_in_their_own_conversation(workspace_a, erin_editor):
    flow = _published_flow(workspace_a, erin_editor)
    embed = _embed(workspace_a, erin_editor, flow)
    visitor = Visitor(embed)
    assert visitor.start().status_code == 200
    first = visitor.say("我想查询订单状态")
    assert first.status_code == 201, first.content
    conversation = Conversation.objects.get(pk=first.json()["conversation_id"])
    assert conversation.embed == embed and conversation.visitor and conversation.created_by is None
    run = Run.objects.get(pk=first.json()["run_id"])
    assert run.inputs == {"input": "我想查询订单状态"} and run.started_by == erin_editor
    assert run.flow_version.number == 1  # the published version

    listed = visitor.get("conversations").json()["conversations"]
    assert [c["id"] for c in listed] == [str(conversation.pk)]
    detail = visitor.get(f"conversations/{conversation.pk}").json()
    assert [t["question"] for t in detail["turns"]] == ["我想查询订单状态"]
    assert detail["turns"][0]["status"] == "running"

    # Another visitor (or the same embed token without theirs) sees none of it.
    stranger = Visitor(embed)
    stranger.start()
    assert stranger.get("conversations").json()["conversations"] == []
    assert stranger.get(f"conversations/{conversation.pk}").status_code == 404
    assert stranger.say("hi", str(conversation.pk)).status_code == 404
    assert stranger.get(f"runs/{run.pk}/events").status_code == 404
    anonymous = Visitor(embed)
    assert anonymous.get("conversations").status_code == 401
    # The team's conversation lists do not hold visitors' conversations.
    from chat.selectors import conversations

    assert list(conversations(workspace_a, flow_id=flow.pk)) == []


def test_a_visitor_token_of_one_embed_does_not_open_another(workspace_a, erin_editor):
    flow = _published_flow(workspace_a, erin_editor)
    one, two = _embed(workspace_a, erin_editor, flow), _embed(workspace_a, erin_editor, flow)
    visitor = Visitor(one)
    visitor.start()
    other = Visitor(two)
    other.token = visitor.token
    response = other.say("hello")
    assert response.status_code == 401 and response.json()["code"] == "visitor_required"
    other.token = visitor.token + "x"
    assert other.get("conversations").status_code == 401
    assert not Run.objects.exists()


def test_requests_from_websites_not_allowed_are_refused_and_change_nothing(
    workspace_a, erin_editor
):
    flow = _published_flow(workspace_a, erin_editor)
    embed = _embed(workspace_a, erin_editor, flow)
    allowed = Visitor(embed, origin=SITE)
    assert allowed.start().status_code == 200
    said = allowed.say("hello")
    assert said.status_code == 201
    assert said["Access-Control-Allow-Origin"] == SITE  # an allowed website may call it directly

    evil = Visitor(embed, origin="https://evil.example")
    evil.token = allowed.token
    for response in (evil.start(), evil.say("hello"), evil.get("conversations")):
        assert response.status_code == 403
        assert response.json()["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in response
    preflight = Client().options(
        f"/embed/{embed.public_id}/api/messages", HTTP_ORIGIN="https://evil.example"
    )
    assert preflight.status_code == 403
    allowed_preflight = Client().options(f"/embed/{embed.public_id}/api/messages", HTTP_ORIGIN=SITE)
    assert allowed_preflight.status_code == 204
    assert "X-Flowdeck-Visitor" in allowed_preflight["Access-Control-Allow-Headers"]
    assert Run.objects.count() == 1


def test_visitors_are_rate_limited_per_visitor_and_per_embed(workspace_a, erin_editor):
    flow = _published_flow(workspace_a, erin_editor)
    embed = _embed(workspace_a, erin_editor, flow, visitor_runs_per_minute=2, runs_per_minute=3)
    first = Visitor(embed)
    first.start()
    for i in range(2):
        # New conversations each time: a conversation's next turn waits for the last one.
        assert first.say(f"message {i}").status_code == 201
    limited = first.say("one too many")
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"

    second = Visitor(embed)
    second.start()
    assert second.say("hello").status_code == 201  # the embed's third this minute
    busy = second.say("again")
    assert busy.status_code == 429
    assert Run.objects.count() == 3


def test_a_turn_waits_for_the_last_one_and_bad_messages_write_nothing(workspace_a, erin_editor):
    flow = _published_flow(workspace_a, erin_editor)
    embed = _embed(workspace_a, erin_editor, flow)
    visitor = Visitor(embed)
    visitor.start()
    first = visitor.say("hello").json()
    busy = visitor.say("and?", first["conversation_id"])
    assert busy.status_code == 409 and busy.json()["code"] == "conversation_busy"
    for bad in ("", "   ", "x" * (embeds.MAX_MESSAGE_CHARS + 1)):
        assert visitor.say(bad).status_code == 400
    response = visitor.client.post(
        f"{visitor.base}/messages", b"{not json", "application/json", **visitor.headers()
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid_body"
    assert Run.objects.count() == 1 and ConversationTurn.objects.count() == 1


def test_an_unpublished_flow_a_disabled_embed_and_a_departed_member_do_not_answer(
    workspace_a, erin_editor, alice_owner
):
    flow = _published_flow(workspace_a, erin_editor)
    embed = _embed(workspace_a, erin_editor, flow)
    visitor = Visitor(embed)
    visitor.start()

    flow.publication.delete()
    response = visitor.say("hello")
    assert response.status_code == 503 and response.json()["code"] == "not_published"

    flow_publish(
        workspace=workspace_a,
        acting=Membership.objects.get(workspace=workspace_a, user=alice_owner),
        flow=flow,
        version_number=1,
    )
    Membership.objects.filter(workspace=workspace_a, user=erin_editor).update(role=Role.VIEWER)
    response = visitor.say("hello")
    assert response.status_code == 503 and response.json()["code"] == "embed_unavailable"

    Membership.objects.filter(workspace=workspace_a, user=erin_editor).update(role=Role.EDITOR)
    Embed.objects.filter(pk=embed.pk).update(enabled=False)
    assert visitor.say("hello").status_code == 404
    assert Client().get(f"/embed/{embed.public_id}/").status_code == 404
    assert not Run.objects.exists()


def test_a_visitor_sees_the_answer_its_sources_and_the_end_but_nothing_else():
    feeders = {"model"}
    shown = [
        embeds.visitor_event(message, feeders, show_sources=True)
        for message in [
            {"event": "run_started", "seq": 1, "data": {"inputs": {"input": "secret"}}},
            {"event": "node_finished", "seq": 2, "node_id": "prompt", "data": "SYSTEM PROMPT"},
            {"event": "on_tool_call", "seq": 3, "node_id": "agent", "data": {"tool_input": "x"}},
            {"event": "on_token", "seq": 4, "node_id": "other", "data": "inner thoughts"},
            {"event": "on_token", "seq": 5, "node_id": "model", "data": "Hel"},
            {
                "event": "on_retrieval",
                "seq": 6,
                "node_id": "kb",
                "data": {
                    "hits": [
                        {
                            "document": "FAQ.pdf",
                            "page": 2,
                            "excerpt": "Returns…",
                            "chunk_id": 99,
                            "score": 0.9,
                        }
                    ]
                },
            },
            {"event": "error", "seq": 7, "node_id": "model", "message": "key sk-123 refused"},
            {"event": "completed", "seq": 8, "status": "success"},
        ]
    ]
    assert [s for s in shown if s] == [
        {"event": "token", "seq": 5, "node": "model", "text": "Hel"},
        {
            "event": "sources",
            "seq": 6,
            "hits": [{"title": "FAQ.pdf", "page": 2, "excerpt": "Returns…"}],
        },
        {"event": "done", "seq": 8, "status": "success"},
    ]
    hidden = embeds.visitor_event(
        {"event": "on_retrieval", "seq": 6, "data": {"hits": [{"document": "FAQ.pdf"}]}},
        feeders,
        show_sources=False,
    )
    assert hidden is None


def test_an_embed_token_opens_no_other_api(workspace_a, erin_editor):
    flow = _published_flow(workspace_a, erin_editor)
    embed = _embed(workspace_a, erin_editor, flow)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {embed.public_id}"}
    for path in (
        "/api/w/acme/flows",
        f"/api/w/acme/flows/{flow.pk}/embeds",
        "/api/w/acme/v1/models",
    ):
        assert Client().get(path, **bearer).status_code == 401, path
    run = Client().post(
        f"/api/w/acme/flows/{flow.pk}/run",
        json.dumps({"inputs": {"input": "hi"}}),
        content_type="application/json",
        **bearer,
    )
    assert run.status_code == 401 and not Run.objects.exists()
