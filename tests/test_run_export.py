"""Run export: `GET /w/<slug>/runs/<run_id>/export.jsonl` — a header, the exact graph, then
every event exactly as stored, streamed in keyset pages; members (viewer and up) of the
run's workspace only; never a credential secret."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Membership
from flows.models import Credential
from flows.services import credential_create
from runs.export import EXPORT_PAGE, export_lines
from runs.models import Run, RunEvent
from tests.flowgraphs import openai_graph, save_flow
from tests.runlogs import make_run

pytestmark = pytest.mark.django_db


def export_url(workspace, run: Run) -> str:
    return reverse("run_export", args=[workspace.slug, run.pk])


def read_lines(response) -> list[dict]:
    assert response.streaming
    body = b"".join(response.streaming_content).decode()
    assert body.endswith("\n")
    return [json.loads(line) for line in body.splitlines()]


def stored_log(run: Run) -> list[dict]:
    return [e.as_message() for e in RunEvent.objects.filter(run=run).order_by("seq")]


def test_viewer_exports_header_graph_and_the_exact_log(
    client_for, workspace_a, alice_owner, bob_viewer
):
    run = make_run(workspace_a, alice_owner, tokens=20, tool_calls=2, reply="forty-two")
    response = client_for(bob_viewer).get(export_url(workspace_a, run))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert f'filename="run-{run.pk}.jsonl"' in response["Content-Disposition"]
    header, graph, *events = read_lines(response)

    assert header["kind"] == "run" and header["format_version"] == 1
    meta = header["run"]
    assert meta["id"] == str(run.pk)
    assert meta["flow"] == {"id": run.flow_id, "name": "support bot"}
    assert meta["version"] == run.flow_version.number
    assert meta["status"] == "succeeded"
    assert meta["inputs"] == {"input": "hi"} and meta["outputs"] == {"output": "forty-two"}
    assert meta["started_by"] == "alice@example.com"
    assert meta["started_at"] and meta["finished_at"] and meta["created_at"]

    assert graph == {
        "kind": "graph",
        "version": run.flow_version.number,
        "checksum": run.flow_version.checksum,
        "is_draft": False,
        "graph": run.flow_version.graph,
    }
    assert events == stored_log(run)
    assert [e["seq"] for e in events] == list(range(1, run.last_seq + 1))


def test_export_reads_the_log_in_keyset_pages(workspace_a, alice_owner):
    run = make_run(workspace_a, alice_owner, tokens=2 * EXPORT_PAGE + 300)
    assert run.last_seq > 2 * EXPORT_PAGE
    with CaptureQueriesContext(connection) as queries:
        chunks = list(export_lines(Run.objects.get(pk=run.pk)))
    lines = "".join(chunks).splitlines()
    assert len(chunks) == 1 + 3  # header + graph, then one chunk per page
    event_reads = [q["sql"] for q in queries.captured_queries if "runs_runevent" in q["sql"]]
    assert len(event_reads) == 3  # ceil(last_seq / page): never one query for it all
    assert all(f"LIMIT {EXPORT_PAGE}" in sql for sql in event_reads)
    assert [json.loads(line) for line in lines[2:]] == stored_log(run)


def test_export_never_contains_a_credential_secret(client_for, workspace_a, alice_owner):
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    secret = "sk-live-EXPORT-SECRET-9f8e7d6c5b4a"
    credential = credential_create(
        workspace=workspace_a,
        acting=acting,
        name="prod",
        provider="openai",
        base_url="https://llm.example.com/v1",
        api_key=secret,
    )
    flow = save_flow(workspace_a, alice_owner, openai_graph(credential.pk), name="with key")
    run = make_run(workspace_a, alice_owner, flow=flow)
    body = b"".join(client_for(alice_owner).get(export_url(workspace_a, run)).streaming_content)
    encrypted = Credential.objects.get(pk=credential.pk).api_key_encrypted
    assert encrypted and secret.encode() not in body and encrypted.encode() not in body
    assert b"EXPORT-SECRET" not in body
    graph = json.loads(body.splitlines()[1])["graph"]
    assert graph == flow.versions.get().graph  # the credential is referenced by id only


def test_members_of_other_workspaces_get_404(
    client_for, workspace_a, alice_owner, bob_viewer, workspace_b, mallory_owner
):
    ours = make_run(workspace_a, alice_owner)
    theirs = make_run(workspace_b, mallory_owner)
    # Mallory (owner of bravo) asks for acme's run, in acme's URL and smuggled into bravo's.
    mallory = client_for(mallory_owner)
    assert mallory.get(export_url(workspace_a, ours)).status_code == 404
    assert mallory.get(reverse("run_export", args=["bravo", ours.pk])).status_code == 404
    # Acme's viewer and owner ask for bravo's run either way.
    for user in (bob_viewer, alice_owner):
        client = client_for(user)
        assert client.get(export_url(workspace_b, theirs)).status_code == 404
        assert client.get(reverse("run_export", args=["acme", theirs.pk])).status_code == 404
    assert (
        client_for(alice_owner).get(reverse("run_export", args=["acme", "nope"])).status_code == 404
    )


def test_anonymous_is_sent_to_login(client_for, workspace_a, alice_owner):
    run = make_run(workspace_a, alice_owner)
    response = client_for(None).get(export_url(workspace_a, run))
    assert response.status_code == 302 and "login" in response["Location"]


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_export_streams_from_an_async_iterator(workspace_a, alice_owner):
    from asgiref.sync import sync_to_async
    from django.db import connections

    try:
        run = await sync_to_async(make_run)(workspace_a, alice_owner, tokens=EXPORT_PAGE + 10)
        client = AsyncClient()
        await client.aforce_login(alice_owner, backend="django.contrib.auth.backends.ModelBackend")
        response = await client.get(export_url(workspace_a, run))
        assert response.status_code == 200
        assert response.is_async  # served without reading the whole file into memory first
        chunks = [chunk async for chunk in response.streaming_content]
        lines = [json.loads(line) for line in b"".join(chunks).splitlines()]
        assert lines[2:] == await sync_to_async(stored_log)(run)
    finally:
        # The ORM ran in asgiref's worker thread: close its connection there, or it
        # outlives the test database.
        await sync_to_async(connections.close_all)()


def test_an_export_is_audited_with_who_and_which_run(
    client_for, workspace_a, alice_owner, bob_viewer
):
    from audit.models import AuditEntry

    run = make_run(workspace_a, alice_owner)
    response = client_for(bob_viewer).get(export_url(workspace_a, run), HTTP_USER_AGENT="jq/1.7")
    b"".join(response.streaming_content)
    entry = AuditEntry.objects.filter(action="run.export").get()
    assert entry.workspace_id == workspace_a.pk and entry.actor_id == bob_viewer.pk
    assert entry.target == f"run:{run.pk}"
    assert entry.after == {"format_version": 1, "version": 1, "events": run.last_seq}


def test_a_refused_export_is_not_recorded_as_an_export(
    client_for, workspace_a, alice_owner, mallory_owner
):
    from audit.models import AuditEntry

    run = make_run(workspace_a, alice_owner)
    assert client_for(mallory_owner).get(export_url(workspace_a, run)).status_code == 404
    assert not AuditEntry.objects.filter(action="run.export").exists()
