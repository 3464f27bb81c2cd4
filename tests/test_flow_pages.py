"""The server-rendered pages around the editor: flow list, editor page, runs list, run page."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Workspace
from flows.models import Flow, FlowVersion
from runs.models import Run, RunStatus

pytestmark = pytest.mark.django_db

GRAPH = {
    "nodes": [
        {
            "id": "chat_input_1",
            "component": "io.chat_input",
            "params": {},
            "position": {"x": 0, "y": 0},
        },
        {
            "id": "text_output_1",
            "component": "io.text_output",
            "params": {},
            "position": {"x": 300, "y": 0},
        },
    ],
    "edges": [
        {
            "source": "chat_input_1",
            "source_port": "text",
            "target": "text_output_1",
            "target_port": "text",
        }
    ],
}


def make_flow(workspace: Workspace, name: str, *, versions: int = 1, user=None) -> Flow:
    flow = Flow.objects.create(workspace=workspace, name=name, created_by=user)
    for number in range(1, versions + 1):
        FlowVersion.objects.create(
            workspace=workspace,
            flow=flow,
            number=number,
            graph=GRAPH,
            checksum=f"{number:064d}",
            note=f"note {number}",
            created_by=user,
        )
    return flow


def make_run(flow: Flow, user, status: str = RunStatus.SUCCEEDED, *, ago: int = 0) -> Run:
    version = flow.versions.order_by("-number").first()
    now = timezone.now() - timedelta(minutes=ago)
    run = Run.objects.create(
        workspace=flow.workspace,
        flow=flow,
        flow_version=version,
        session_id=uuid.uuid4().hex,
        started_by=user,
        status=status,
        started_at=now,
        finished_at=now + timedelta(seconds=2) if status != RunStatus.RUNNING else None,
    )
    Run.objects.filter(pk=run.pk).update(created_at=now)
    return run


def island_config(response) -> dict:
    html = response.content.decode()
    start = html.index('id="flowdeck-config"')
    start = html.index(">", start) + 1
    return json.loads(html[start : html.index("</script>", start)])


# --- flow list ------------------------------------------------------------------------


def test_flow_list_shows_live_flows_with_their_last_run_status(
    client_for, workspace_a, alice_owner, bob_viewer, django_assert_max_num_queries
):
    support = make_flow(workspace_a, "Support bot", versions=2)
    make_run(support, alice_owner, RunStatus.FAILED, ago=10)
    make_run(support, alice_owner, RunStatus.SUCCEEDED, ago=1)
    make_flow(workspace_a, "Never run")
    gone = make_flow(workspace_a, "Deleted one")
    Flow.objects.filter(pk=gone.pk).update(deleted_at=timezone.now())
    for i in range(5):
        make_flow(workspace_a, f"Extra {i}")

    client = client_for(bob_viewer)
    with django_assert_max_num_queries(12):
        response = client.get("/w/acme/flows/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Support bot" in html and "Never run" in html and "Deleted one" not in html
    row = html[html.index(f'data-flow="{support.pk}"') :].split("</tr>")[0]
    assert "succeeded" in row and "failed" not in row and "v2" in row
    assert "never run" in html
    assert "New flow" not in html  # viewers do not get the create form


def test_flow_list_search_filters_by_name(client_for, workspace_a, alice_owner):
    make_flow(workspace_a, "Support bot")
    make_flow(workspace_a, "Sales digest")
    html = client_for(alice_owner).get("/w/acme/flows/", {"q": "sup"}).content.decode()
    assert "Support bot" in html and "Sales digest" not in html


def test_editor_creates_renames_duplicates_and_deletes_flows(client_for, workspace_a, erin_editor):
    client = client_for(erin_editor)
    response = client.post("/w/acme/flows/", {"action": "create", "name": "Fresh"})
    flow = Flow.objects.get(workspace=workspace_a, name="Fresh")
    assert response.status_code == 302 and response["Location"] == f"/w/acme/flows/{flow.pk}/"

    client.post("/w/acme/flows/", {"action": "rename", "flow": flow.pk, "name": "Renamed"})
    flow.refresh_from_db()
    assert flow.name == "Renamed"

    client.post("/w/acme/flows/", {"action": "duplicate", "flow": flow.pk})
    assert Flow.objects.filter(workspace=workspace_a, deleted_at__isnull=True).count() == 2

    client.post("/w/acme/flows/", {"action": "delete", "flow": flow.pk})
    flow.refresh_from_db()
    assert flow.deleted_at is not None  # soft: the row and its versions stay
    html = client.get("/w/acme/flows/").content.decode()
    assert f'data-flow="{flow.pk}"' not in html and "Renamed (copy)" in html
    assert client.get(f"/w/acme/flows/{flow.pk}/").status_code == 404


def test_viewer_cannot_change_flows(client_for, workspace_a, bob_viewer):
    flow = make_flow(workspace_a, "Keep me")
    client = client_for(bob_viewer)
    assert client.post("/w/acme/flows/", {"action": "create", "name": "Nope"}).status_code == 403
    response = client.post("/w/acme/flows/", {"action": "delete", "flow": flow.pk})
    assert response.status_code == 403
    flow.refresh_from_db()
    assert flow.deleted_at is None
    assert not Flow.objects.filter(name="Nope").exists()


def test_flows_of_another_workspace_are_404(
    client_for, workspace_a, workspace_b, alice_owner, mallory_owner
):
    theirs = make_flow(workspace_b, "Mallory's")
    ours = make_flow(workspace_a, "Ours")
    client = client_for(alice_owner)
    assert client.get(f"/w/acme/flows/{theirs.pk}/").status_code == 404
    response = client.post("/w/acme/flows/", {"action": "delete", "flow": theirs.pk})
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.deleted_at is None
    outsider = client_for(mallory_owner)
    assert outsider.get("/w/acme/flows/").status_code == 404
    assert outsider.get(f"/w/acme/flows/{ours.pk}/").status_code == 404


# --- editor page ------------------------------------------------------------------------


def test_editor_page_hands_the_island_its_flow_and_permissions(
    client_for, workspace_a, erin_editor, bob_viewer
):
    flow = make_flow(workspace_a, "Support bot", versions=3, user=erin_editor)
    response = client_for(erin_editor).get(f"/w/acme/flows/{flow.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "build/editor.js" in html and "build/editor.css" in html
    config = island_config(response)
    assert config["mode"] == "editor"
    assert config["flowId"] == flow.pk and config["version"] == 3
    assert config["graph"] == GRAPH
    assert [v["number"] for v in config["versions"]] == [3, 2, 1]
    assert config["versions"][0]["created_by"] == "erin@example.com"
    assert config["apiBase"] == "/api/w/acme/" and config["wsPath"] == "/ws/w/acme/exec"
    assert config["canEdit"] is True and config["canRun"] is True

    viewer_config = island_config(client_for(bob_viewer).get(f"/w/acme/flows/{flow.pk}/"))
    assert viewer_config["canEdit"] is False and viewer_config["canRun"] is False


def test_anonymous_is_sent_to_login(client_for, workspace_a):
    flow = make_flow(workspace_a, "Support bot")
    response = client_for(None).get(f"/w/acme/flows/{flow.pk}/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- runs -------------------------------------------------------------------------------


def test_runs_list_per_workspace_and_per_flow(
    client_for, workspace_a, alice_owner, erin_editor, bob_viewer, django_assert_max_num_queries
):
    support = make_flow(workspace_a, "Support bot")
    digest = make_flow(workspace_a, "Digest")
    r1 = make_run(support, erin_editor, RunStatus.SUCCEEDED, ago=3)
    r2 = make_run(digest, alice_owner, RunStatus.FAILED, ago=2)
    for i in range(5):
        make_run(digest, alice_owner, RunStatus.CANCELLED, ago=20 + i)
    client = client_for(bob_viewer)
    with django_assert_max_num_queries(10):
        html = client.get("/w/acme/runs/").content.decode()
    assert f'data-run="{r1.pk}"' in html and f'data-run="{r2.pk}"' in html
    assert html.index(str(r2.pk)) < html.index(str(r1.pk))  # newest first
    row = html[html.index(f'data-run="{r1.pk}"') :].split("</tr>")[0]
    assert "succeeded" in row and "erin@example.com" in row and "v1" in row and "2.00 s" in row

    html = client.get(f"/w/acme/flows/{support.pk}/runs/").content.decode()
    assert str(r1.pk) in html and str(r2.pk) not in html


def test_run_page_shows_the_run_in_the_run_view(client_for, workspace_a, erin_editor, bob_viewer):
    flow = make_flow(workspace_a, "Support bot", versions=2)
    run = make_run(flow, erin_editor, RunStatus.RUNNING)
    response = client_for(bob_viewer).get(f"/w/acme/runs/{run.pk}/")
    assert response.status_code == 200
    config = island_config(response)
    assert config["mode"] == "run" and config["runId"] == str(run.pk)
    assert config["graph"] == GRAPH and config["version"] == 2
    assert config["canRun"] is False and config["canEdit"] is False
    editor_config = island_config(client_for(erin_editor).get(f"/w/acme/runs/{run.pk}/"))
    assert editor_config["canRun"] is True  # editors may re-run from the run page


def test_runs_of_another_workspace_are_404(
    client_for, workspace_a, workspace_b, alice_owner, mallory_owner
):
    theirs = make_run(make_flow(workspace_b, "Theirs"), mallory_owner)
    client = client_for(alice_owner)
    assert client.get(f"/w/acme/runs/{theirs.pk}/").status_code == 404
    assert client.get(f"/w/bravo/runs/{theirs.pk}/").status_code == 404
    assert client.get(f"/w/acme/runs/{uuid.uuid4()}/").status_code == 404
    assert client.get(f"/w/acme/flows/{theirs.flow_id}/runs/").status_code == 404


# --- versions ---------------------------------------------------------------------------


def test_versions_page_lists_the_history_and_compares_two_versions(
    client_for, workspace_a, erin_editor, bob_viewer
):
    flow = make_flow(workspace_a, "Support bot", versions=1, user=erin_editor)
    changed = json.loads(json.dumps(GRAPH))
    changed["nodes"][1]["params"] = {"max_chars": 10}
    changed["nodes"].append(
        {"id": "extra_1", "component": "io.text_output", "params": {}, "position": {"x": 0, "y": 0}}
    )
    changed["edges"].append(
        {
            "source": "chat_input_1",
            "source_port": "text",
            "target": "extra_1",
            "target_port": "text",
        }
    )
    FlowVersion.objects.create(
        workspace=workspace_a,
        flow=flow,
        number=2,
        graph=changed,
        checksum="2" * 64,
        note="shorter",
        created_by=erin_editor,
        is_draft=True,
    )
    client = client_for(bob_viewer)
    html = client.get(f"/w/acme/flows/{flow.pk}/versions/").content.decode()
    assert 'data-version="2"' in html and 'data-version="1"' in html
    assert "shorter" in html and "draft" in html and "erin@example.com" in html
    assert f"/w/acme/flows/{flow.pk}/?version=1" in html

    html = client.get(f"/w/acme/flows/{flow.pk}/versions/", {"a": 1, "b": 2}).content.decode()
    diff = html[html.index('data-testid="version-diff"') :]
    assert "+ node extra_1" in diff
    assert "~ text_output_1: max_chars" in diff
    assert "+ edge chat_input_1.text → extra_1.text" in diff
    assert "chat_input_1:" not in diff  # unchanged nodes are not listed

    assert client.get(f"/w/acme/flows/{flow.pk}/versions/", {"a": 1, "b": 9}).status_code == 404


def test_editor_opens_a_chosen_version(client_for, workspace_a, erin_editor):
    flow = make_flow(workspace_a, "Support bot", versions=3)
    client = client_for(erin_editor)
    assert island_config(client.get(f"/w/acme/flows/{flow.pk}/", {"version": 2}))["version"] == 2
    assert client.get(f"/w/acme/flows/{flow.pk}/", {"version": 7}).status_code == 404
    assert client.get(f"/w/acme/flows/{flow.pk}/", {"version": "x"}).status_code == 404


def test_versions_of_another_workspace_are_404(client_for, workspace_b, alice_owner):
    theirs = make_flow(workspace_b, "Theirs", versions=2)
    client = client_for(alice_owner)
    assert client.get(f"/w/acme/flows/{theirs.pk}/versions/").status_code == 404
    assert client.get(f"/w/bravo/flows/{theirs.pk}/versions/").status_code == 404
