"""Comparing a re-run with its original: `/w/<slug>/runs/<a>/compare/<b>/` and the
`compare_runs` selector — node by node outputs, durations, errors and statuses, from the
logs; both runs must be in the URL's workspace and the caller a member (viewer and up)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.selectors import compare_runs
from tests.runlogs import NODES, make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def original(workspace_a, alice_owner):
    return make_run(workspace_a, alice_owner, reply="first answer", tokens=4)


@pytest.fixture
def rerun(workspace_a, alice_owner, original):
    return make_run(
        workspace_a,
        alice_owner,
        flow=original.flow,
        rerun_of=original,
        reply="second answer",
        tokens=9,
        fail_output=True,
    )


def compare_url(slug: str, a, b) -> str:
    return reverse("run_compare", args=[slug, a.pk, b.pk])


def test_compare_runs_lines_up_nodes_in_graph_order(workspace_a, original, rerun):
    rows = compare_runs(workspace_a, original, rerun)
    assert [r.node_id for r in rows] == list(NODES)
    by_node = {r.node_id: r for r in rows}
    assert by_node["input"].same_output and by_node["input"].a.output == "hi"
    model = by_node["model"]
    assert (model.a.output, model.b.output) == ("first answer", "second answer")
    assert (model.a.duration_ms, model.b.duration_ms) == (4 + 5, 9 + 5)
    assert not model.same_output
    output = by_node["output"]
    assert output.a.status == "finished" and output.b.status == "error"
    assert output.b.errors == ["output exploded"] and output.a.errors == []
    assert by_node["model"].component == "llm.demo"


def test_compare_refuses_runs_of_another_workspace(
    workspace_a, original, workspace_b, mallory_owner
):
    theirs = make_run(workspace_b, mallory_owner)
    with pytest.raises(ValueError):
        compare_runs(workspace_a, original, theirs)


def test_viewer_sees_both_runs_side_by_side(client_for, bob_viewer, original, rerun):
    response = client_for(bob_viewer).get(compare_url("acme", original, rerun))
    assert response.status_code == 200
    body = response.content.decode()
    for text in ("first answer", "second answer", "output exploded", "9 ms", "14 ms"):
        assert text in body, text
    assert "succeeded" in body and "failed" in body
    assert body.count('<tr data-node="') == len(NODES)
    assert 'data-node="model" class="differs"' in body
    assert 'data-node="input" class="same"' in body


def test_run_page_links_a_rerun_to_the_comparison(client_for, bob_viewer, original, rerun):
    body = client_for(bob_viewer).get(reverse("run_detail", args=["acme", rerun.pk])).content
    assert compare_url("acme", original, rerun).encode() in body
    plain = client_for(bob_viewer).get(reverse("run_detail", args=["acme", original.pk])).content
    assert b'data-testid="compare-original"' not in plain


def test_strangers_and_other_workspaces_get_404(
    client_for, alice_owner, bob_viewer, original, rerun, workspace_b, mallory_owner
):
    theirs = make_run(workspace_b, mallory_owner)
    theirs_too = make_run(workspace_b, mallory_owner, flow=theirs.flow, rerun_of=theirs)
    mallory = client_for(mallory_owner)
    assert mallory.get(compare_url("acme", original, rerun)).status_code == 404
    assert mallory.get(compare_url("bravo", original, rerun)).status_code == 404
    assert mallory.get(compare_url("bravo", theirs, rerun)).status_code == 404
    for user in (alice_owner, bob_viewer):
        client = client_for(user)
        # one of ours with one of theirs, in either order, and both of theirs
        assert client.get(compare_url("acme", original, theirs)).status_code == 404
        assert client.get(compare_url("acme", theirs, original)).status_code == 404
        assert client.get(compare_url("acme", theirs, theirs_too)).status_code == 404
        assert client.get(compare_url("bravo", theirs, theirs_too)).status_code == 404
    bad = reverse("run_compare", args=["acme", original.pk, "not-a-uuid"])
    assert client_for(alice_owner).get(bad).status_code == 404
    assert client_for(None).get(compare_url("acme", original, rerun)).status_code == 302
