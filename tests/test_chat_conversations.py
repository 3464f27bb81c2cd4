"""Conversations (chat app): created, listed, searched, read with their turns, renamed and
deleted through the API (audited), turns started by the one-call run API with
`conversation_id`, and what is refused: another workspace's or another flow's
conversation (404), a turn while the last one runs (409), bad titles (400).

Runs here are only queued (no worker executes them in a non-transactional test); the
live multi-turn test is in test_chat_conversations_live.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Membership
from audit.models import AuditEntry
from chat.models import Conversation, ConversationTurn
from chat.services import HistoryMessage, conversation_create, flow_call
from flows.models import ConversationMessage
from runs.models import Run, RunStatus
from runs.services import RunRefused
from tests import flowgraphs

pytestmark = pytest.mark.django_db


def _bearer(token: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}", "content_type": "application/json"}


def _acting(workspace: Any, user: Any) -> Membership:
    return Membership.objects.get(workspace=workspace, user=user)


def _finished_turn(conversation: Conversation, user: Any, text: str, answer: str) -> Run:
    """Start the conversation's next turn, then end it as a worker would have."""
    run = flow_call(
        workspace=conversation.workspace,
        acting=_acting(conversation.workspace, user),
        flow=conversation.flow,
        version_number=1,
        inputs={"input": text},
        conversation_id=str(conversation.pk),
    )
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED, outputs={"output": answer}, started_at=now, finished_at=now
    )
    return run


def _call(token: str, flow_id: int, body: dict[str, Any]) -> Any:
    return Client().post(f"/api/w/acme/flows/{flow_id}/run", json.dumps(body), **_bearer(token))


def test_turns_share_the_conversations_session_in_order_and_title_it(workspace_a, erin_editor):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="ok", delay_ms=0)
    conversation = conversation_create(
        workspace=workspace_a, acting=_acting(workspace_a, erin_editor), flow=flow
    )
    long_first = "My name is Sam and   I would like\nto talk about " + "very " * 30 + "much"
    first = _finished_turn(conversation, erin_editor, long_first, "Hello Sam.")
    second = _finished_turn(conversation, erin_editor, "What is my name?", "Sam.")
    turns = list(ConversationTurn.objects.filter(conversation=conversation))
    assert [(t.number, t.run_id) for t in turns] == [(1, first.pk), (2, second.pk)]
    assert first.session_id == second.session_id == conversation.session_id
    conversation.refresh_from_db()
    assert conversation.title.startswith("My name is Sam and I would like to talk about very")
    assert len(conversation.title) == 80 and conversation.title.endswith("…")
    # A run without a conversation keeps a session of its own.
    alone = flow_call(
        workspace=workspace_a,
        acting=_acting(workspace_a, erin_editor),
        flow=flow,
        version_number=1,
        inputs={"input": "hi"},
    )
    assert alone.session_id != conversation.session_id


def test_the_api_lists_searches_reads_renames_and_deletes(
    workspace_a, erin_editor, bob_viewer, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="ok", delay_ms=0)
    other_flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="ok", delay_ms=0)
    token = token_for(workspace_a, erin_editor)
    viewer = token_for(workspace_a, bob_viewer)

    created = Client().post(f"/api/w/acme/flows/{flow.pk}/conversations", "{}", **_bearer(token))
    assert created.status_code == 201, created.content
    conversation = Conversation.objects.get(pk=created.json()["id"])
    _finished_turn(conversation, erin_editor, "I keep bees", "Bees are great.")
    _finished_turn(conversation, erin_editor, "How many hives?", "Start with two ZEBRA hives.")
    other = conversation_create(
        workspace=workspace_a, acting=_acting(workspace_a, erin_editor), flow=other_flow
    )
    _finished_turn(other, erin_editor, "Tell me about trains", "Trains run on rails.")

    def listed(url: str) -> list[str]:
        response = Client().get(url, **_bearer(viewer))
        assert response.status_code == 200, response.content
        return [c["title"] for c in response.json()]

    assert listed("/api/w/acme/conversations") == ["Tell me about trains", "I keep bees"]
    assert listed(f"/api/w/acme/flows/{flow.pk}/conversations") == ["I keep bees"]
    assert listed(f"/api/w/acme/conversations?flow={other_flow.pk}") == ["Tell me about trains"]
    assert listed("/api/w/acme/conversations?q=zebra") == ["I keep bees"]  # an answer
    assert listed("/api/w/acme/conversations?q=HIVES") == ["I keep bees"]  # an input
    assert listed("/api/w/acme/conversations?q=trains") == ["Tell me about trains"]  # title
    assert listed("/api/w/acme/conversations?q=nowhere") == []
    assert listed("/api/w/acme/conversations?limit=1") == ["Tell me about trains"]
    too_long = Client().get("/api/w/acme/conversations?q=" + "x" * 201, **_bearer(viewer))
    assert too_long.status_code in (400, 422)

    detail = Client().get(f"/api/w/acme/conversations/{conversation.pk}", **_bearer(viewer))
    assert detail.status_code == 200
    body = detail.json()
    assert body["turns"] == 2 and body["flow"] == flow.pk
    assert [(t["number"], t["inputs"], t["answer"], t["status"]) for t in body["turn_list"]] == [
        (1, {"input": "I keep bees"}, "Bees are great.", "succeeded"),
        (2, {"input": "How many hives?"}, "Start with two ZEBRA hives.", "succeeded"),
    ]
    assert all(Run.objects.filter(pk=t["run_id"]).exists() for t in body["turn_list"])

    url = f"/api/w/acme/conversations/{conversation.pk}"
    blank = Client().patch(url, json.dumps({"title": "   "}), **_bearer(token))
    assert blank.status_code == 400
    assert Client().patch(url, json.dumps({"title": "x"}), **_bearer(viewer)).status_code == 403
    renamed = Client().patch(url, json.dumps({"title": " Bee  keeping "}), **_bearer(token))
    assert renamed.status_code == 200 and renamed.json()["title"] == "Bee keeping"
    entry = AuditEntry.objects.get(action="conversation.rename")
    assert entry.before == {"title": "I keep bees"} and entry.after == {"title": "Bee keeping"}

    ConversationMessage.objects.create(
        workspace=workspace_a,
        session_id=conversation.session_id,
        conversation="chat",
        role="user",
        content="I keep bees",
    )
    run_ids = list(conversation.turns.values_list("run_id", flat=True))
    assert Client().delete(url, **_bearer(viewer)).status_code == 403
    assert Client().delete(url, **_bearer(token)).status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not ConversationMessage.objects.filter(session_id=conversation.session_id).exists()
    assert Run.objects.filter(pk__in=run_ids).count() == 2  # the runs stay
    deleted = AuditEntry.objects.get(action="conversation.delete")
    assert deleted.target == f"conversation:{conversation.pk}"
    assert deleted.before == {"title": "Bee keeping", "flow": flow.pk, "turns": 2}
    assert Client().get(url, **_bearer(viewer)).status_code == 404


def test_search_finds_chinese_and_quoted_text_in_turns_on_every_database(
    workspace_a, workspace_b, erin_editor, mallory_owner, token_for
):
    """Runs' inputs and outputs are JSON: PostgreSQL prints `订单` as itself, SQLite (the
    embedded default) stores it as `\\u8ba2\\u5355`, and a quote is `\\"` in both. A search
    finds the text as the user typed it either way; this runs on whichever database the
    suite uses."""
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="ok", delay_ms=0)
    acting = _acting(workspace_a, erin_editor)
    orders = conversation_create(workspace=workspace_a, acting=acting, flow=flow, title="Help")
    _finished_turn(orders, erin_editor, "我想查询订单状态", "您的订单已发货。")
    quoted = conversation_create(workspace=workspace_a, acting=acting, flow=flow, title="Quote")
    _finished_turn(quoted, erin_editor, 'He said "refund me" twice', "Noted.")
    conversation_create(workspace=workspace_a, acting=acting, flow=flow, title="Weather")
    foreign_flow = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="ok", delay_ms=0)
    foreign = conversation_create(
        workspace=workspace_b, acting=_acting(workspace_b, mallory_owner), flow=foreign_flow
    )
    _finished_turn(foreign, mallory_owner, "我的订单在哪里", "在路上。")
    viewer = token_for(workspace_a, erin_editor)

    def found(q: str) -> list[str]:
        response = Client().get(
            f"/api/w/acme/flows/{flow.pk}/conversations", {"q": q}, **_bearer(viewer)
        )
        assert response.status_code == 200, response.content
        return [c["title"] for c in response.json()]

    assert found("订单") == ["Help"]  # in the question and the answer; never the other tenant's
    assert found("已发货") == ["Help"]  # in the answer only
    assert found('"refund me"') == ["Quote"]  # quotes as typed
    assert found("退款") == []
    assert found("") == ["Weather", "Quote", "Help"]  # no text: the whole list, latest first


def test_another_workspaces_or_flows_conversation_is_not_found(
    workspace_a, workspace_b, erin_editor, mallory_owner, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="ok", delay_ms=0)
    other_flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="ok", delay_ms=0)
    foreign_flow = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="ok", delay_ms=0)
    foreign = conversation_create(
        workspace=workspace_b, acting=_acting(workspace_b, mallory_owner), flow=foreign_flow
    )
    mine = conversation_create(
        workspace=workspace_a, acting=_acting(workspace_a, erin_editor), flow=other_flow
    )
    token = token_for(workspace_a, erin_editor)
    runs_before = Run.objects.count()

    for conversation_id in (str(foreign.pk), str(mine.pk), "not-a-uuid"):
        response = _call(
            token,
            flow.pk,
            {"inputs": {"input": "hi"}, "version": 1, "conversation_id": conversation_id},
        )
        assert response.status_code == 404, (conversation_id, response.content)
        assert response.json()["code"] == "not_found"
    assert Run.objects.count() == runs_before and not ConversationTurn.objects.exists()
    assert AuditEntry.objects.filter(
        action="access.denied", target=f"conversation:{foreign.pk}"
    ).exists()

    url = f"/api/w/acme/conversations/{foreign.pk}"
    assert Client().get(url, **_bearer(token)).status_code == 404
    rename = Client().patch(url, json.dumps({"title": "mine now"}), **_bearer(token))
    assert rename.status_code == 404
    assert Client().delete(url, **_bearer(token)).status_code == 404
    foreign.refresh_from_db()
    assert foreign.title == ""
    listed = Client().get("/api/w/acme/conversations", **_bearer(token)).json()
    assert [c["id"] for c in listed] == [str(mine.pk)]


def test_a_turn_waits_for_the_last_one_and_history_is_refused_with_it(
    workspace_a, erin_editor, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="ok", delay_ms=0)
    conversation = conversation_create(
        workspace=workspace_a, acting=_acting(workspace_a, erin_editor), flow=flow, title="T"
    )
    token = token_for(workspace_a, erin_editor)
    body = {"inputs": {"input": "hi"}, "version": 1, "conversation_id": str(conversation.pk)}
    first = _call(token, flow.pk, {**body, "stream": True})  # queued; nobody executes it
    assert first.status_code == 200
    busy = _call(token, flow.pk, body)
    assert busy.status_code == 409 and busy.json()["code"] == "conversation_busy"
    assert ConversationTurn.objects.filter(conversation=conversation).count() == 1
    conversation.refresh_from_db()
    assert conversation.title == "T"  # a given title stays
    with pytest.raises(RunRefused, match="its own history"):
        flow_call(
            workspace=workspace_a,
            acting=_acting(workspace_a, erin_editor),
            flow=flow,
            version_number=1,
            inputs={"input": "hi"},
            history=[HistoryMessage("user", "earlier")],
            conversation_id=str(conversation.pk),
        )
