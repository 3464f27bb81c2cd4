"""Drafts and versions: an editor's work in progress is kept as the flow's draft (never
validated, only size- and storability-checked), a concurrent save is a 409 with the other
editor's draft, discards are audited (autosaves are not), a no-change save adds no version,
and an empty flow is refused at every door (validation, the API, the socket)."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from accounts.models import Membership
from audit.models import AuditEntry
from flows import services
from flows.builder import validate_graph
from flows.demo import hello_graph
from flows.models import Flow, FlowDraft, FlowVersion
from runs.models import Run
from tests.conftest import make_user
from tests.wsclient import in_process_socket

SECRET_PROBLEM = "params."

INCOMPLETE = {
    "nodes": [
        {"id": "demo_1", "component": "llm.demo", "params": {}, "position": {"x": 0, "y": 0}}
    ],
    "edges": [],
}


def api(slug: str, path: str = "") -> str:
    return f"/api/w/{slug}/{path}"


def send(client, method, url, body=None):
    kwargs = {} if body is None else {"data": json.dumps(body), "content_type": "application/json"}
    return getattr(client, method)(url, **kwargs)


@pytest.fixture
def flow_a(workspace_a, alice_owner):
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    return services.flow_create(
        workspace=workspace_a, acting=acting, name="Hello", graph=hello_graph()
    )


@pytest.fixture
def empty_flow(workspace_a, alice_owner):
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    return services.flow_create(workspace=workspace_a, acting=acting, name="Blank")


# --- drafts -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_incomplete_graph_is_kept_as_a_draft_and_read_back(client_for, erin_editor, empty_flow):
    client = client_for(erin_editor)
    url = api("acme", f"flows/{empty_flow.pk}/draft")
    assert send(client, "get", url).json() == {
        "revision": 0,
        "graph": None,
        "base_version": None,
        "updated_at": None,
        "updated_by": None,
    }
    # It does not validate (its only node is fed by nothing) and it is kept anyway.
    assert validate_graph(INCOMPLETE, empty_flow.workspace)
    saved = send(client, "put", url, {"graph": INCOMPLETE, "base_revision": 0})
    assert saved.status_code == 200, saved.content
    assert saved.json()["revision"] == 1 and saved.json()["updated_by"] == "erin@example.com"
    again = send(client, "get", url).json()
    assert again["graph"] == INCOMPLETE and again["revision"] == 1
    assert not FlowVersion.objects.filter(flow=empty_flow).exists()  # a draft is no version
    # The next save builds on revision 1.
    changed = {**INCOMPLETE, "nodes": [{**INCOMPLETE["nodes"][0], "position": {"x": 5, "y": 5}}]}
    assert send(client, "put", url, {"graph": changed, "base_revision": 1}).json()["revision"] == 2
    # Autosaves are not audited.
    assert not AuditEntry.objects.filter(action__startswith="flow.draft").exists()


@pytest.mark.django_db
def test_a_save_over_another_editors_draft_is_a_409_with_theirs(
    client_for, erin_editor, carol_admin, empty_flow
):
    url = api("acme", f"flows/{empty_flow.pk}/draft")
    mine, theirs = client_for(erin_editor), client_for(carol_admin)
    assert send(mine, "put", url, {"graph": INCOMPLETE, "base_revision": 0}).status_code == 200
    other = {"nodes": [], "edges": [], "annotations": []}
    assert send(theirs, "put", url, {"graph": other, "base_revision": 1}).status_code == 200

    conflict = send(mine, "put", url, {"graph": INCOMPLETE, "base_revision": 1})
    assert conflict.status_code == 409
    body = conflict.json()
    assert body["draft"]["revision"] == 2 and body["draft"]["graph"] == other
    assert "carol@example.com" in body["detail"]
    assert FlowDraft.objects.get(flow=empty_flow).graph == other  # refused: nothing changed
    # "Overwrite": save again on top of their revision.
    overwrite = send(mine, "put", url, {"graph": INCOMPLETE, "base_revision": 2})
    assert overwrite.status_code == 200 and overwrite.json()["revision"] == 3

    # Discarded by them meanwhile: a 409 too, with no draft.
    assert send(theirs, "delete", url).status_code == 204
    gone = send(mine, "put", url, {"graph": INCOMPLETE, "base_revision": 3})
    assert gone.status_code == 409 and gone.json()["draft"]["revision"] == 0
    assert "discarded" in gone.json()["detail"]


@pytest.mark.django_db
def test_discarding_a_draft_is_audited_once(client_for, erin_editor, empty_flow):
    url = api("acme", f"flows/{empty_flow.pk}/draft")
    client = client_for(erin_editor)
    send(client, "put", url, {"graph": INCOMPLETE, "base_revision": 0})
    assert send(client, "delete", url).status_code == 204
    assert send(client, "delete", url).status_code == 204  # nothing left: nothing recorded
    entries = AuditEntry.objects.filter(action="flow.draft_discard")
    assert entries.count() == 1
    assert entries.get().target == f"flow:{empty_flow.pk}" and entries.get().before["revision"] == 1
    assert not FlowDraft.objects.filter(flow=empty_flow).exists()


@pytest.mark.django_db
def test_drafts_are_checked_for_size_and_storability_only(client_for, erin_editor, empty_flow):
    url = api("acme", f"flows/{empty_flow.pk}/draft")
    client = client_for(erin_editor)
    for graph, words in [
        ("not a graph", "JSON object"),
        ({"nodes": "x"}, "`nodes` is a list"),
        ({"nodes": [], "edges": [], "pad": "x" * 1_100_000}, "larger than"),
        ({"nodes": [{"id": "a\x00b"}], "edges": []}, "NUL"),
    ]:
        response = send(client, "put", url, {"graph": graph, "base_revision": 0})
        assert response.status_code == 400, response.content
        assert words in json.dumps(response.json()["detail"]), response.json()
    assert not FlowDraft.objects.filter(flow=empty_flow).exists()


@pytest.mark.django_db
def test_drafts_of_another_workspace_are_404_and_viewers_are_refused(
    client_for, mallory_owner, bob_viewer, flow_a, workspace_b
):
    url = api("acme", f"flows/{flow_a.pk}/draft")
    outsider = client_for(mallory_owner)
    assert send(outsider, "get", url).status_code == 404
    assert send(outsider, "put", url, {"graph": INCOMPLETE, "base_revision": 0}).status_code == 404
    assert send(outsider, "delete", url).status_code == 404
    # Their own workspace's URL with our flow's id: 404 as well.
    foreign = api("bravo", f"flows/{flow_a.pk}/draft")
    assert send(outsider, "put", foreign, {"graph": INCOMPLETE, "base_revision": 0}).status_code == 404
    viewer = client_for(bob_viewer)
    assert send(viewer, "put", url, {"graph": INCOMPLETE, "base_revision": 0}).status_code == 403
    assert not FlowDraft.objects.exists()


@pytest.mark.django_db
def test_the_editor_page_carries_the_draft_when_it_is_newer_than_the_version(
    client_for, erin_editor, flow_a
):
    client = client_for(erin_editor)

    def config() -> dict:
        html = client.get(f"/w/acme/flows/{flow_a.pk}/").content.decode()
        start = html.index('id="flowdeck-config" type="application/json">') + 45
        return json.loads(html[start : html.index("</script>", start)])

    assert config()["draft"] is None and config()["draftRevision"] == 0
    url = api("acme", f"flows/{flow_a.pk}/draft")
    send(client, "put", url, {"graph": INCOMPLETE, "base_revision": 0, "base_version": 1})
    loaded = config()
    assert loaded["draft"]["graph"] == INCOMPLETE and loaded["draftRevision"] == 1
    assert loaded["draft"]["baseVersion"] == 1 and loaded["graph"] == hello_graph()
    # A version saved after the draft: the page opens on the version (the draft is older).
    moved = hello_graph()
    moved["nodes"][0]["position"] = {"x": 1, "y": 1}
    services.flow_version_create(flow=flow_a, graph=moved, acting=None)
    assert config()["draft"] is None and config()["draftRevision"] == 1


# --- versions -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_saving_without_changes_answers_with_the_existing_version(client_for, erin_editor, flow_a):
    client = client_for(erin_editor)
    url = api("acme", f"flows/{flow_a.pk}/versions")
    same = send(client, "post", url, {"graph": hello_graph(), "note": "again"})
    assert same.status_code == 200 and same.json()["number"] == 1 and same.json()["unchanged"]
    assert FlowVersion.objects.filter(flow=flow_a).count() == 1
    moved = hello_graph()
    moved["nodes"][0]["position"] = {"x": 10, "y": 80}
    new = send(client, "post", url, {"graph": moved, "note": "moved"})
    assert new.status_code == 201 and new.json()["number"] == 2 and not new.json()["unchanged"]
    assert send(client, "post", url, {"graph": moved}).json()["number"] == 2
    assert FlowVersion.objects.filter(flow=flow_a).count() == 2
    # A draft run of the same graph is a version of its own (it is what ran).
    draft_run = send(client, "post", url, {"graph": moved, "is_draft": True})
    assert draft_run.status_code == 201 and draft_run.json()["is_draft"]


# --- the empty flow, at every door --------------------------------------------------------------
EMPTY = {"nodes": [], "edges": []}


@pytest.mark.django_db
def test_an_empty_flow_does_not_validate_and_cannot_be_saved(client_for, erin_editor, empty_flow):
    problems = validate_graph(EMPTY, empty_flow.workspace)
    assert [(p.code, p.node_id) for p in problems] == [("empty_graph", None)]
    assert "empty" in problems[0].message
    # Notes alone are no flow either.
    note = {"id": "n", "kind": "note", "text": "hi", "position": {"x": 0, "y": 0},
            "size": {"width": 100, "height": 80}}
    assert validate_graph({**EMPTY, "annotations": [note]}, empty_flow.workspace)[0].code == (
        "empty_graph"
    )
    client = client_for(erin_editor)
    response = send(client, "post", api("acme", f"flows/{empty_flow.pk}/versions"), {"graph": EMPTY})
    assert response.status_code == 400
    assert response.json()["problems"][0]["code"] == "empty_graph"
    assert not FlowVersion.objects.filter(flow=empty_flow).exists()


def _legacy_empty_version(flow: Flow) -> FlowVersion:
    """An empty version written before empty flows were refused (straight into the table)."""
    return FlowVersion.objects.create(
        workspace_id=flow.workspace_id,
        flow=flow,
        number=1,
        graph=EMPTY,
        checksum=services.graph_checksum(EMPTY),
    )


@pytest.mark.django_db
def test_the_api_refuses_to_run_an_empty_flow(client_for, erin_editor, empty_flow):
    _legacy_empty_version(empty_flow)
    response = send(
        client_for(erin_editor), "post", api("acme", f"flows/{empty_flow.pk}/runs"), {"inputs": {}}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_graph" and body["problems"][0]["code"] == "empty_graph"
    assert not Run.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_the_socket_refuses_to_run_an_empty_flow_saved_or_sent():
    def world() -> tuple[str, int]:
        from accounts.services import api_token_create, workspace_create

        user = make_user("empty@example.com")
        workspace = workspace_create(name="Empty", slug="empty", owner=user)
        acting = Membership.objects.get(workspace=workspace, user=user)
        flow = services.flow_create(workspace=workspace, acting=acting, name="Blank")
        _legacy_empty_version(flow)
        return api_token_create(workspace=workspace, user=user, name="t").secret, flow.pk

    secret, flow_id = await sync_to_async(world)()
    communicator = await in_process_socket("empty", secret)
    try:
        for message in (
            {"action": "run", "flow": flow_id, "inputs": {}},
            {"nodes": [], "edges": [], "flow": flow_id},
        ):
            await communicator.send_to(text_data=json.dumps(message))
            reply = await communicator.receive_json_from(timeout=20)
            assert reply["event"] == "rejected" and reply["code"] == "invalid_graph", reply
            assert [p["code"] for p in reply["problems"]] == ["empty_graph"]
            assert "empty" in reply["problems"][0]["message"]
    finally:
        await communicator.disconnect()
    assert not await sync_to_async(Run.objects.exists)()


# --- problems read as sentences -----------------------------------------------------------------
@pytest.mark.django_db
def test_problem_messages_are_sentences_without_paths_or_patterns(workspace_a):
    graph = {
        "nodes": [
            {
                "id": "route",
                "component": "logic.router",
                "params": {
                    "rules": [
                        {"output": "bad name!", "pattern": "x"},
                        {"output": "ok", "match": "regex", "pattern": "(unclosed"},
                    ]
                },
            },
            {"id": "model", "component": "llm.demo", "params": {"delay_ms": -1}},
            {"id": "tpl", "component": "prompt.template", "params": {"template": ""}},
        ],
        "edges": [],
    }
    messages = {p.node_id: p.message for p in validate_graph(graph, workspace_a)}
    assert messages["route"].startswith("“Rule 1 output” is not allowed: use 1-32 letters")
    assert messages["model"] == "“Delay Ms” must be at least 0."
    assert messages["tpl"] == "“Template” can't be empty."
    for message in messages.values():
        assert SECRET_PROBLEM not in message and "^[" not in message
    regex_only = {"nodes": [graph["nodes"][0]], "edges": []}
    regex_only["nodes"][0]["params"]["rules"][0]["output"] = "fine"
    (problem,) = [p for p in validate_graph(regex_only, workspace_a) if p.code == "invalid_regex"]
    assert problem.field == "params.rules.1.pattern"
    assert problem.message == (
        "Rule 2: The regular expression can't be used: a “(” is never closed."
    )
    assert "(unclosed" not in problem.message
