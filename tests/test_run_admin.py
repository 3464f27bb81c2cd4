"""The admin for platform staff: runs of every workspace, the run page (metadata, inputs,
outputs, timeline, the event log paged by seq), flows with version diffs, masked
credentials and the per-workspace whitelist with its history. Non-staff never get in."""

from __future__ import annotations

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Membership
from flows.models import WorkspaceComponentPolicy, WorkspaceComponentPolicyChange
from flows.services import credential_create, flow_version_create
from runs.models import Run, RunEvent
from tests.flowgraphs import demo_graph
from tests.runlogs import NODES, make_flow, make_run

pytestmark = pytest.mark.django_db


def run_page(run: Run) -> str:
    return reverse("admin:runs_run_change", args=[run.pk])


# --- who gets in --------------------------------------------------------------------------
def test_staff_see_runs_of_every_workspace(
    staff_client, workspace_a, alice_owner, workspace_b, mallory_owner
):
    run_a = make_run(workspace_a, alice_owner)
    run_b = make_run(workspace_b, mallory_owner)
    response = staff_client.get(reverse("admin:runs_run_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert str(run_a.pk)[:8] in body and str(run_b.pk)[:8] in body
    assert "acme" in body.lower() and "bravo" in body.lower()


@pytest.mark.parametrize("who", ["alice_owner", "carol_admin", "bob_viewer"])
def test_non_staff_members_are_refused_everywhere_in_the_run_admin(
    who, request, client_for, workspace_a, alice_owner
):
    run = make_run(workspace_a, alice_owner)
    other = make_run(workspace_a, alice_owner, rerun_of=run)
    client = client_for(request.getfixturevalue(who))
    for url in (
        reverse("admin:runs_run_changelist"),
        run_page(run),
        reverse("admin:runs_run_export", args=[run.pk]),
        reverse("admin:runs_run_compare", args=[run.pk, other.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_runs_and_events_are_read_only_in_the_admin(staff_client, workspace_a, alice_owner):
    run = make_run(workspace_a, alice_owner)
    assert staff_client.get(reverse("admin:runs_run_add")).status_code == 403
    assert staff_client.get(reverse("admin:runs_run_delete", args=[run.pk])).status_code == 403
    response = staff_client.post(
        reverse("admin:runs_run_changelist"),
        {"action": "delete_selected", "_selected_action": [str(run.pk)], "post": "yes"},
    )
    assert Run.objects.filter(pk=run.pk).exists()
    assert response.status_code in {200, 302}
    assert RunEvent.objects.filter(run=run).count() == run.last_seq


# --- filters and search ------------------------------------------------------------------
def test_changelist_filters_by_workspace_status_and_searches_email_flow_and_id(
    staff_client, workspace_a, alice_owner, workspace_b, mallory_owner
):
    ok = make_run(workspace_a, alice_owner)
    failed = make_run(workspace_a, alice_owner, fail_output=True)
    theirs = make_run(
        workspace_b, mallory_owner, flow=make_flow(workspace_b, mallory_owner, "bravo bot")
    )
    url = reverse("admin:runs_run_changelist")

    def shown(**params: str) -> set[str]:
        body = staff_client.get(url, params).content.decode()
        return {r for r in (ok, failed, theirs) if str(r.pk)[:8] in body}

    assert shown(workspace__id__exact=str(workspace_b.pk)) == {theirs}
    assert shown(status__exact="failed") == {failed}
    assert shown(q="mallory@example.com") == {theirs}
    assert shown(q="bravo bot") == {theirs}
    assert shown(q=str(failed.pk)) == {failed}
    assert shown(started_by__id__exact=str(alice_owner.pk)) == {ok, failed}


# --- the run page ---------------------------------------------------------------------------
def test_run_page_shows_metadata_inputs_outputs_and_first_events(
    staff_client, workspace_a, alice_owner
):
    run = make_run(workspace_a, alice_owner, reply="the answer is 42")
    response = staff_client.get(run_page(run))
    assert response.status_code == 200
    body = response.content.decode()
    assert str(run.pk) in body
    assert "alice@example.com" in body and "support bot" in body and "succeeded" in body
    assert "the answer is 42" in body  # outputs
    assert "&quot;input&quot;: &quot;hi&quot;" in body  # inputs, pretty-printed and escaped
    assert f"of {run.last_seq}" in body
    assert "run_started" in body and "completed" in body


def _seqs_on(body: str) -> list[int]:
    table = body.split('<table class="events">', 1)[1].split("</table>", 1)[0]
    return [int(s) for s in re.findall(r"<tr><td>(\d+)</td>", table)]


def test_event_log_pages_by_seq(staff_client, workspace_a, alice_owner):
    run = make_run(workspace_a, alice_owner, tokens=242)  # 250 events
    first = staff_client.get(run_page(run)).content.decode()
    assert _seqs_on(first) == list(range(1, 101))
    assert 'href="?after=100"' in first
    middle = staff_client.get(run_page(run), {"after": 100}).content.decode()
    assert _seqs_on(middle) == list(range(101, 201))
    assert 'href="?after=0"' in middle and 'href="?after=200"' in middle
    assert run.last_seq == 250
    last = staff_client.get(run_page(run), {"after": 200}).content.decode()
    assert _seqs_on(last) == list(range(201, 251))
    assert 'rel="next"' not in last
    jump = staff_client.get(run_page(run), {"seq": 137}).content.decode()
    assert _seqs_on(jump)[0] == 137


def test_run_page_queries_are_bounded_and_equal_for_page_1_and_page_5(
    staff_client, workspace_a, alice_owner, django_assert_max_num_queries
):
    run = make_run(workspace_a, alice_owner, tokens=3000, tool_calls=20)
    counts = []
    for after in (0, 400):
        with (
            django_assert_max_num_queries(12),
            CaptureQueriesContext(connection) as queries,
        ):
            response = staff_client.get(run_page(run), {"after": after})
        assert response.status_code == 200
        assert _seqs_on(response.content.decode())[0] == after + 1
        counts.append(len(queries))
        for q in queries.captured_queries:
            sql = q["sql"].upper()
            assert not ("COUNT(*)" in sql and "RUNS_RUNEVENT" in sql), q["sql"]
    assert counts[0] == counts[1]


def test_timeline_has_one_bar_per_node_and_marks_every_tool_call(
    staff_client, workspace_a, alice_owner
):
    run = make_run(workspace_a, alice_owner, tokens=50, tool_calls=3, step_ms=10)
    body = staff_client.get(run_page(run)).content.decode()
    svg = body.split('<svg class="run-timeline"', 1)[1].split("</svg>", 1)[0]
    bars = re.findall(r'<rect class="bar bar-(\w+)" data-node="([^"]+)"', svg)
    assert sorted(node for _, node in bars) == sorted(NODES)
    assert {state for state, _ in bars} == {"finished"}
    tool_seqs = set(
        RunEvent.objects.filter(run=run, event="on_tool_call").values_list("seq", flat=True)
    )
    assert {int(s) for s in re.findall(r'class="tool-mark" data-seq="(\d+)"', svg)} == tool_seqs
    # The model node (50 tokens, 3 tool calls) is the longest bar: where the time went.
    widths = dict(
        (node, float(w))
        for node, w in re.findall(r'data-node="([^"]+)" x="[\d.]+" y="\d+" width="([\d.]+)"', svg)
    )
    assert max(widths, key=widths.get) == "model"


def test_timeline_marks_a_failed_node(staff_client, workspace_a, alice_owner):
    run = make_run(workspace_a, alice_owner, fail_output=True)
    body = staff_client.get(run_page(run)).content.decode()
    assert re.search(r'class="bar bar-error" data-node="output"', body)


def test_run_page_links_a_rerun_to_its_comparison(staff_client, workspace_a, alice_owner):
    original = make_run(workspace_a, alice_owner, reply="first answer")
    rerun = make_run(
        workspace_a, alice_owner, flow=original.flow, rerun_of=original, reply="second answer"
    )
    body = staff_client.get(run_page(rerun)).content.decode()
    compare_url = reverse("admin:runs_run_compare", args=[original.pk, rerun.pk])
    assert compare_url in body
    page = staff_client.get(compare_url).content.decode()
    assert "first answer" in page and "second answer" in page


def test_admin_compare_refuses_runs_of_two_workspaces(
    staff_client, workspace_a, alice_owner, workspace_b, mallory_owner
):
    mine = make_run(workspace_a, alice_owner)
    theirs = make_run(workspace_b, mallory_owner)
    url = reverse("admin:runs_run_compare", args=[mine.pk, theirs.pk])
    assert staff_client.get(url).status_code == 404


def test_staff_export_from_the_admin_is_the_stored_log(
    staff, staff_client, workspace_b, mallory_owner
):
    run = make_run(workspace_b, mallory_owner, tool_calls=2)
    response = staff_client.get(reverse("admin:runs_run_export", args=[run.pk]))
    assert response.status_code == 200
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert lines[0]["run"]["id"] == str(run.pk)
    stored = [e.as_message() for e in RunEvent.objects.filter(run=run).order_by("seq")]
    assert lines[2:] == stored
    from audit.models import AuditEntry

    entry = AuditEntry.objects.get(action="admin.export")
    assert entry.actor_id == staff.pk and entry.workspace_id == run.workspace_id
    assert entry.target == f"run:{run.pk}"


# --- flows, versions, credentials, whitelist ---------------------------------------------
def test_flow_version_diff_shows_the_changed_lines(staff_client, workspace_a, alice_owner):
    flow = make_flow(workspace_a, alice_owner)
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    flow_version_create(
        flow=flow, graph=demo_graph(reply="a brand new reply", delay_ms=7), acting=acting.user
    )
    flow_version_create(
        flow=flow, graph=demo_graph(reply="third time", delay_ms=7), acting=acting.user
    )
    url = reverse("admin:flows_flow_diff", args=[flow.pk])
    body = staff_client.get(url, {"a": 1, "b": 2}).content.decode().replace("&nbsp;", " ")
    assert "hello there" in body and "a brand new reply" in body
    assert "diff_chg" in body or "diff_add" in body
    assert "third time" not in body
    default = staff_client.get(url).content.decode().replace("&nbsp;", " ")  # the last two
    assert "a brand new reply" in default and "third time" in default
    assert staff_client.get(reverse("admin:flows_flow_change", args=[flow.pk])).status_code == 200


def test_flow_diff_is_staff_only(client_for, workspace_a, alice_owner):
    flow = make_flow(workspace_a, alice_owner)
    response = client_for(alice_owner).get(reverse("admin:flows_flow_diff", args=[flow.pk]))
    assert response.status_code == 302


def test_credentials_are_masked(staff_client, workspace_a, alice_owner):
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    secret = "sk-live-TOPSECRET-0123456789"
    credential = credential_create(
        workspace=workspace_a,
        acting=acting,
        name="openai prod",
        provider="openai",
        base_url="https://llm.example.com/v1",
        api_key=secret,
    )
    empty = credential_create(
        workspace=workspace_a,
        acting=acting,
        name="local",
        provider="ollama",
        base_url="",
        api_key="",
    )
    encrypted = type(credential).objects.get(pk=credential.pk).api_key_encrypted
    listing = staff_client.get(reverse("admin:flows_credential_changelist")).content.decode()
    detail = staff_client.get(
        reverse("admin:flows_credential_change", args=[credential.pk])
    ).content.decode()
    for body in (listing, detail):
        assert secret not in body and encrypted not in body and "TOPSECRET" not in body
    assert "openai prod" in listing and ">set<" in listing and ">not set<" in listing
    assert ">set<" in detail
    assert empty.pk


def test_workspace_whitelist_shows_its_change_history(staff_client, workspace_a, carol_admin):
    from flows.services import workspace_policy_set

    acting = Membership.objects.get(workspace=workspace_a, user=carol_admin)
    workspace_policy_set(workspace=workspace_a, acting=acting, changes={"llm.demo": False})
    policy = WorkspaceComponentPolicy.objects.get(workspace=workspace_a, key="llm.demo")
    assert WorkspaceComponentPolicyChange.objects.filter(workspace=workspace_a).exists()
    listing = staff_client.get(reverse("admin:flows_workspacecomponentpolicy_changelist"))
    assert "llm.demo" in listing.content.decode()
    detail = staff_client.get(
        reverse("admin:flows_workspacecomponentpolicy_change", args=[policy.pk])
    ).content.decode()
    assert "carol@example.com" in detail and "{&quot;enabled&quot;: false}" in detail


def test_platform_whitelist_page_shows_its_change_history(staff, staff_client):
    from flows.models import ComponentPolicy
    from flows.services import platform_policy_set

    platform_policy_set(key="llm.demo", enabled=False, acting=staff)
    platform_policy_set(key="llm.demo", enabled=True, acting=staff)
    policy = ComponentPolicy.objects.get(key="llm.demo")
    body = staff_client.get(
        reverse("admin:flows_componentpolicy_change", args=[policy.pk])
    ).content.decode()
    history = body.split("<table><tr><th>when</th>", 1)[1].split("</table>", 1)[0]
    assert history.count("ops@flowdeck.example") == 2
    assert "{&quot;enabled&quot;: false}" in history and "{&quot;enabled&quot;: true}" in history
    assert staff_client.get(reverse("admin:flows_componentpolicy_add")).status_code == 200
