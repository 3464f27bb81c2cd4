"""The workspace's run pages: a finished run's inputs, outputs and timeline under the run
view (what the admin page shows too), comparing two runs picked from the list, and the way
from a run to the one before it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.models import Run, RunStatus
from tests.runlogs import make_run

pytestmark = pytest.mark.django_db


def test_a_finished_runs_page_shows_its_inputs_outputs_and_timeline(
    client_for, workspace_a, alice_owner, bob_viewer, staff_client
):
    run = make_run(workspace_a, alice_owner, reply="the answer")
    html = client_for(bob_viewer).get(f"/w/acme/runs/{run.pk}/").content.decode()
    io = html[html.index('data-testid="run-io"') :]
    assert "&quot;input&quot;: &quot;hi&quot;" in io and "&quot;the answer&quot;" in io
    timeline = html[html.index('data-testid="run-timeline"') :]
    assert "<svg" in timeline and "3 nodes over" in timeline
    admin = staff_client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert 'data-testid="run-timeline"' in admin and "3 nodes over" in admin


def test_an_unfinished_run_says_its_summary_comes_when_it_ends(
    client_for, workspace_a, alice_owner
):
    run = make_run(workspace_a, alice_owner)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, finished_at=None)
    html = client_for(alice_owner).get(f"/w/acme/runs/{run.pk}/").content.decode()
    assert 'data-testid="run-summary-pending"' in html and 'data-testid="run-io"' not in html


def test_two_runs_picked_in_the_list_open_their_comparison_oldest_first(
    client_for, workspace_a, alice_owner, bob_viewer
):
    older = make_run(workspace_a, alice_owner, reply="one")
    newer = make_run(workspace_a, alice_owner, flow=older.flow, reply="two")
    client = client_for(bob_viewer)
    listing = client.get("/w/acme/runs/").content.decode()
    assert (
        f'name="run" value="{older.pk}"' in listing and 'data-testid="compare-selected"' in listing
    )
    response = client.get("/w/acme/runs/compare/", {"run": [str(newer.pk), str(older.pk)]})
    assert response.status_code == 302
    assert response.url == reverse("run_compare", args=["acme", older.pk, newer.pk])


def test_picking_other_than_two_runs_says_so(client_for, workspace_a, alice_owner):
    run = make_run(workspace_a, alice_owner)
    response = client_for(alice_owner).get(
        "/w/acme/runs/compare/", {"run": [str(run.pk)], "back": "/w/acme/runs/"}, follow=True
    )
    assert "Pick exactly two runs to compare." in response.content.decode()
    assert response.redirect_chain[-1][0] == "/w/acme/runs/"


def test_a_picked_run_of_another_workspace_is_not_found(
    client_for, workspace_a, workspace_b, alice_owner, mallory_owner
):
    ours = make_run(workspace_a, alice_owner)
    theirs = make_run(workspace_b, mallory_owner)
    response = client_for(alice_owner).get(
        "/w/acme/runs/compare/", {"run": [str(ours.pk), str(theirs.pk)]}
    )
    assert response.status_code == 404


def test_a_run_links_to_its_comparison_with_the_previous_run_of_its_flow(
    client_for, workspace_a, alice_owner
):
    first = make_run(workspace_a, alice_owner)
    second = make_run(workspace_a, alice_owner, flow=first.flow)
    client = client_for(alice_owner)
    assert (
        'data-testid="compare-previous"'
        not in client.get(f"/w/acme/runs/{first.pk}/").content.decode()
    )
    html = client.get(f"/w/acme/runs/{second.pk}/").content.decode()
    assert reverse("run_compare", args=["acme", first.pk, second.pk]) in html
