"""Publishing a flow's version (chat.services, the publication API, the versions page),
and what the one-call run API and the OpenAI-compatible endpoint refuse before any run
starts: auth, tenancy, unpublished flows, bad bodies in OpenAI's error shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEntry
from chat.models import Publication
from chat.services import HistoryMessage, flow_call, flow_publish
from flows.models import ConversationMessage, FlowVersion
from flows.services import graph_checksum
from runs.models import Run
from tests import flowgraphs

pytestmark = pytest.mark.django_db


def _bearer(token: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}", "content_type": "application/json"}


def _add_version(flow: Any, graph: dict[str, Any], *, is_draft: bool = False) -> FlowVersion:
    number = flow.versions.count() + 1
    return FlowVersion.objects.create(
        workspace=flow.workspace,
        flow=flow,
        number=number,
        graph=graph,
        checksum=graph_checksum(graph),
        is_draft=is_draft,
    )


def _publish_api(token: str, flow_id: int, version: int) -> Any:
    return Client().post(
        f"/api/w/acme/flows/{flow_id}/publication",
        json.dumps({"version": version}),
        **_bearer(token),
    )


def test_publish_and_roll_back_through_the_api_are_audited(workspace_a, erin_editor, token_for):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="one", delay_ms=0)
    flow.name = "Support bot"
    flow.save()
    _add_version(flow, flowgraphs.demo_graph(reply="two", delay_ms=0))
    token = token_for(workspace_a, erin_editor)

    before = Client().get(f"/api/w/acme/flows/{flow.pk}/publication", **_bearer(token)).json()
    assert before["version"] is None and before["model"] is None

    response = _publish_api(token, flow.pk, 2)
    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2 and response.json()["model"] == "support-bot"
    rolled = _publish_api(token, flow.pk, 1)
    assert rolled.json()["version"] == 1 and rolled.json()["model"] == "support-bot"
    assert Publication.objects.filter(flow=flow).count() == 1  # one pointer, moved

    entries = list(AuditEntry.objects.filter(action="flow.publish").order_by("pk"))
    afters = [e.after or {} for e in entries]
    assert [(e.before, a["version"], a["rollback"]) for e, a in zip(entries, afters)] == [
        (None, 2, False),
        ({"version": 2}, 1, True),
    ]
    assert all(e.actor_id == erin_editor.pk and e.target == f"flow:{flow.pk}" for e in entries)

    gone = Client().delete(f"/api/w/acme/flows/{flow.pk}/publication", **_bearer(token))
    assert gone.status_code == 204
    assert not Publication.objects.filter(flow=flow).exists()
    assert AuditEntry.objects.filter(action="flow.unpublish").count() == 1


def test_a_viewer_cannot_publish(workspace_a, erin_editor, bob_viewer, token_for, client_for):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="one", delay_ms=0)
    response = _publish_api(token_for(workspace_a, bob_viewer), flow.pk, 1)
    assert response.status_code == 403
    page = client_for(bob_viewer).post(
        f"/w/acme/flows/{flow.pk}/versions/", {"action": "publish", "version": 1}
    )
    assert page.status_code == 403
    assert not Publication.objects.exists()
    assert not AuditEntry.objects.filter(action="flow.publish").exists()


def test_an_invalid_or_draft_or_missing_version_is_refused_and_nothing_changes(
    workspace_a, erin_editor, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="one", delay_ms=0)
    broken = flowgraphs.demo_graph(reply="x", delay_ms=0)
    broken["edges"] = broken["edges"][:1]  # the output node has no input
    _add_version(flow, broken)
    _add_version(flow, flowgraphs.demo_graph(reply="d", delay_ms=0), is_draft=True)
    token = token_for(workspace_a, erin_editor)

    invalid = _publish_api(token, flow.pk, 2)
    assert invalid.status_code == 400 and invalid.json()["problems"], invalid.content
    draft = _publish_api(token, flow.pk, 3)
    assert draft.status_code == 400 and "draft" in json.dumps(draft.json())
    missing = _publish_api(token, flow.pk, 9)
    assert missing.status_code == 400 and "no version 9" in json.dumps(missing.json())
    assert not Publication.objects.exists()
    assert not AuditEntry.objects.filter(action="flow.publish").exists()


def test_the_versions_page_shows_the_published_badge_and_publishes(
    workspace_a, erin_editor, client_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="one", delay_ms=0)
    _add_version(flow, flowgraphs.demo_graph(reply="two", delay_ms=0))
    client = client_for(erin_editor)
    page = client.get(f"/w/acme/flows/{flow.pk}/versions/").content.decode()
    assert "No version is published" in page and 'data-testid="published-badge"' not in page
    response = client.post(
        f"/w/acme/flows/{flow.pk}/versions/", {"action": "publish", "version": 1}
    )
    assert response.status_code == 302
    page = client.get(f"/w/acme/flows/{flow.pk}/versions/").content.decode()
    assert "v1 is published" in page and page.count('data-testid="published-badge"') == 1
    assert "Roll back to this" not in page  # v2 is newer: "Publish"


def test_model_names_are_unique_readable_and_survive_a_rename(workspace_a, alice_owner):
    from accounts.models import Membership

    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    first = flowgraphs.demo_flow(workspace_a, alice_owner, reply="a", delay_ms=0)
    second = flowgraphs.demo_flow(workspace_a, alice_owner, reply="b", delay_ms=0)
    for flow in (first, second):
        flow.name = "Help desk!"
        flow.save()
    a = flow_publish(workspace=workspace_a, acting=owner, flow=first, version_number=1)
    b = flow_publish(workspace=workspace_a, acting=owner, flow=second, version_number=1)
    assert a.model_name == "help-desk" and b.model_name == f"help-desk-{second.pk}"
    first.name = "Renamed"
    first.save()
    again = flow_publish(workspace=workspace_a, acting=owner, flow=first, version_number=1)
    assert again.model_name == "help-desk"


def test_history_goes_into_each_conversation_memory_of_the_run(workspace_a, alice_owner):
    from accounts.models import Membership

    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    graph = flowgraphs.demo_graph(reply="ok", delay_ms=0)
    graph["nodes"].append(
        {
            "id": "memory",
            "component": "memory.conversation",
            "params": {"conversation": "support"},
            "position": {"x": 0, "y": 200},
        }
    )
    graph["edges"].append(
        {"source": "input", "source_port": "text", "target": "memory", "target_port": "message"}
    )
    flow = flowgraphs.save_flow(workspace_a, alice_owner, graph)
    history = [HistoryMessage("system", "Be brief."), HistoryMessage("user", "My name is Ada.")]
    run = flow_call(
        workspace=workspace_a,
        acting=owner,
        flow=flow,
        version_number=1,
        inputs={"input": "What is my name?"},
        history=history,
    )
    rows = ConversationMessage.objects.filter(session_id=run.session_id).order_by("pk")
    assert [(r.conversation, r.role, r.content) for r in rows] == [
        ("support", "system", "Be brief."),
        ("support", "user", "My name is Ada."),
    ]
    assert all(r.workspace_id == workspace_a.pk for r in rows)


# --- the one-call run API: refusals before a run starts -----------------------------------
def _call(token: str, flow_id: int, body: Any, slug: str = "acme") -> Any:
    return Client().post(f"/api/w/{slug}/flows/{flow_id}/run", json.dumps(body), **_bearer(token))


def test_one_call_refuses_unpublished_bad_bodies_and_other_workspaces(
    workspace_a, workspace_b, erin_editor, bob_viewer, mallory_owner, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="one", delay_ms=0)
    foreign = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="theirs", delay_ms=0)
    token = token_for(workspace_a, erin_editor)

    unpublished = _call(token, flow.pk, {"inputs": {"input": "hi"}})
    assert unpublished.status_code == 409 and unpublished.json()["code"] == "not_published"
    for body, field in [
        ({"inputs": "hi"}, "inputs"),
        ({"inputs": {}, "timeout": 10**6}, "timeout"),
        ({"inputs": {}, "stream": "yes"}, "stream"),
        ({"inputs": {}, "surprise": 1}, "surprise"),
    ]:
        response = _call(token, flow.pk, body)
        assert response.status_code == 400, (body, response.content)
        assert field in response.json()["message"]
    not_an_input = _call(token, flow.pk, {"inputs": {"nope": "hi"}, "version": 1})
    assert not_an_input.status_code == 400 and not_an_input.json()["code"] == "invalid_inputs"
    no_version = _call(token, flow.pk, {"inputs": {"input": "hi"}, "version": 7})
    assert no_version.status_code == 404
    no_conversation = _call(token, flow.pk, {"inputs": {"input": "hi"}, "conversation_id": "c1"})
    assert no_conversation.status_code == 404
    assert no_conversation.json()["code"] == "not_found"
    not_json = Client().post(f"/api/w/acme/flows/{flow.pk}/run", "{nope", **_bearer(token))
    assert not_json.status_code == 400

    assert _call(token, foreign.pk, {"inputs": {"input": "hi"}, "version": 1}).status_code == 404
    viewer = _call(token_for(workspace_a, bob_viewer), flow.pk, {"inputs": {}, "version": 1})
    assert viewer.status_code == 403
    assert _call("fdk_nope", flow.pk, {"inputs": {}}).status_code == 401
    flow.deleted_at = flow.updated_at
    flow.save()
    assert _call(token, flow.pk, {"inputs": {"input": "hi"}, "version": 1}).status_code == 404
    assert not Run.objects.exists()


# --- the OpenAI-compatible endpoint: refusals in OpenAI's shape ---------------------------
def _completions(token: str, body: Any, slug: str = "acme") -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return Client().post(f"/api/w/{slug}/v1/chat/completions", data, **_bearer(token))


def _assert_openai_error(response: Any, status: int, code: str | None, param: str | None) -> None:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"] and error["type"]
    assert (error["code"], error["param"]) == (code, param), error


def test_openai_errors_have_openais_shape(
    workspace_a, workspace_b, erin_editor, alice_owner, bob_viewer, mallory_owner, token_for
):
    from accounts.models import Membership

    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="one", delay_ms=0)
    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    model = flow_publish(workspace=workspace_a, acting=owner, flow=flow, version_number=1)
    theirs = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="theirs", delay_ms=0)
    theirs.name = "Theirs"
    theirs.save()
    b_owner = Membership.objects.get(workspace=workspace_b, user=mallory_owner)
    foreign = flow_publish(workspace=workspace_b, acting=b_owner, flow=theirs, version_number=1)
    token = token_for(workspace_a, erin_editor)
    hi = [{"role": "user", "content": "hi"}]

    _assert_openai_error(
        _completions("fdk_nope", {"model": model.model_name, "messages": hi}),
        401,
        "invalid_api_key",
        None,
    )
    _assert_openai_error(
        _completions(token, {"model": foreign.model_name, "messages": hi}),
        404,
        "model_not_found",
        "model",
    )
    _assert_openai_error(
        _completions(token, {"model": f"flow-{theirs.pk}", "messages": hi}),
        404,
        "model_not_found",
        "model",
    )
    _assert_openai_error(
        _completions(token, {"model": f"{model.model_name}@9", "messages": hi}),
        404,
        "model_not_found",
        "model",
    )
    _assert_openai_error(_completions(token, "{not json"), 400, "invalid_body", None)
    _assert_openai_error(
        _completions(token, {"messages": hi}), 400, "missing_required_parameter", "model"
    )
    _assert_openai_error(
        _completions(token, {"model": model.model_name, "messages": []}),
        400,
        "invalid_type",
        "messages",
    )
    _assert_openai_error(
        _completions(token, {"model": model.model_name, "messages": [{"role": "tool"}]}),
        400,
        "invalid_value",
        "messages[0].role",
    )
    _assert_openai_error(
        _completions(
            token,
            {"model": model.model_name, "messages": [*hi, {"role": "assistant", "content": "yo"}]},
        ),
        400,
        "invalid_value",
        "messages[1].role",
    )
    _assert_openai_error(
        _completions(
            token,
            {
                "model": model.model_name,
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
        ),
        400,
        "invalid_value",
        "messages[0].content",
    )
    _assert_openai_error(
        _completions(
            token,
            {"model": model.model_name, "messages": hi, "stream_options": {"include_usage": True}},
        ),
        400,
        "invalid_value",
        "stream_options",
    )
    _assert_openai_error(
        _completions(token, {"model": model.model_name, "messages": hi, "n": 2}),
        400,
        "invalid_value",
        "n",
    )
    _assert_openai_error(
        _completions(
            token_for(workspace_a, bob_viewer), {"model": model.model_name, "messages": hi}
        ),
        403,
        "insufficient_role",
        None,
    )
    # A token of workspace B on workspace A's URL: 401 (the token opens only its own).
    _assert_openai_error(
        _completions(
            token_for(workspace_b, mallory_owner), {"model": model.model_name, "messages": hi}
        ),
        401,
        "invalid_api_key",
        None,
    )
    assert not Run.objects.exists()


def test_models_lists_the_published_flows_of_this_workspace_only(
    workspace_a, workspace_b, erin_editor, alice_owner, mallory_owner, bob_viewer, token_for
):
    from accounts.models import Membership

    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    published = flowgraphs.demo_flow(workspace_a, erin_editor, reply="one", delay_ms=0)
    published.name = "Answers"
    published.save()
    flowgraphs.demo_flow(workspace_a, erin_editor, reply="draft", delay_ms=0)  # not published
    flow_publish(workspace=workspace_a, acting=owner, flow=published, version_number=1)
    theirs = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="b", delay_ms=0)
    b_owner = Membership.objects.get(workspace=workspace_b, user=mallory_owner)
    flow_publish(workspace=workspace_b, acting=b_owner, flow=theirs, version_number=1)

    listed = Client().get("/api/w/acme/v1/models", **_bearer(token_for(workspace_a, bob_viewer)))
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [
        ("answers", "model", "acme")
    ]
    _assert_openai_error(Client().get("/api/w/acme/v1/models"), 401, "invalid_api_key", None)


def test_a_published_flow_and_its_workspace_can_still_be_deleted(workspace_a, alice_owner):
    from accounts.models import Membership

    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    flow = flowgraphs.demo_flow(workspace_a, alice_owner, reply="a", delay_ms=0)
    flow_publish(workspace=workspace_a, acting=owner, flow=flow, version_number=1)
    flow.delete()  # the publication goes with it (its version is RESTRICTed, not PROTECTed)
    assert not Publication.objects.exists()
    other = flowgraphs.demo_flow(workspace_a, alice_owner, reply="b", delay_ms=0)
    flow_publish(workspace=workspace_a, acting=owner, flow=other, version_number=1)
    workspace_a.delete()
    assert not Publication.objects.exists()


def test_rate_limits_answer_429_in_each_endpoints_shape(
    workspace_a, erin_editor, alice_owner, token_for, settings
):
    from accounts.models import Membership

    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="a", delay_ms=0)
    model = flow_publish(workspace=workspace_a, acting=owner, flow=flow, version_number=1)
    settings.FLOWDECK = {**settings.FLOWDECK, "RUNS_PER_MINUTE_PER_USER": 0}
    token = token_for(workspace_a, erin_editor)
    hi = [{"role": "user", "content": "hi"}]
    _assert_openai_error(
        _completions(token, {"model": model.model_name, "messages": hi}),
        429,
        "rate_limit_exceeded",
        None,
    )
    called = _call(token, flow.pk, {"inputs": {"input": "hi"}})
    assert called.status_code == 429 and called.json()["code"] == "rate_limited"
    assert not Run.objects.exists()
