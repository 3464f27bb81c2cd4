"""Budgets set by a workspace's admins (usage app): the workspace's on Settings → Usage and
through `PUT usage/budget`, an API key's on Settings → API tokens. What the form saves is
what the run start enforces (a run refused once the budget is spent); editors and viewers
read it; bad input changes nothing and says why; another workspace gets 404; every
change is one audit entry."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from accounts.models import ApiToken, User
from accounts.services import api_token_create
from audit.models import AuditEntry
from flows.models import Flow
from runs.models import Run
from tests import flowgraphs
from tests.runlogs import used_run
from usage.models import KeyBudget, WorkspaceBudget
from usage.selectors import tokens_left
from usage.services import record_run_usage

pytestmark = pytest.mark.django_db

USAGE_PAGE = "/w/acme/settings/usage/"
BUDGET_API = "/api/w/acme/usage/budget"


def _bearer(token: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}", "content_type": "application/json"}


def _spend(flow: Flow, user: User, tokens: int, api_token: ApiToken | None = None) -> None:
    """A finished run whose log reports `tokens` (half in, half out), recorded as usage."""
    usage = {"input_tokens": tokens // 2, "output_tokens": tokens - tokens // 2, "model": "m"}
    run = used_run(flow, user, usage, api_token=api_token)
    assert record_run_usage(run_id=str(run.pk)) == 1


def _start_run(secret: str, flow: Flow) -> Any:
    return Client().post(
        f"/api/w/acme/flows/{flow.pk}/runs",
        json.dumps({"inputs": {"input": "hi"}}),
        **_bearer(secret),
    )


def _entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("seq"))


# --- the workspace's budget on the usage page -----------------------------------------------


def test_an_admin_sets_the_budget_and_a_run_is_refused_once_it_is_spent(
    client_for, workspace_a, carol_admin, erin_editor, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="hi", delay_ms=0)
    admin = client_for(carol_admin)
    page = admin.get(USAGE_PAGE)
    assert page.status_code == 200
    assert b'data-testid="budget-form"' in page.content

    saved = admin.post(USAGE_PAGE, {"monthly_tokens": "100", "monthly_cost": ""}, follow=True)
    assert saved.redirect_chain == [(USAGE_PAGE, 302)]
    assert "Budget saved." in saved.content.decode()
    budget = WorkspaceBudget.objects.get(workspace=workspace_a)
    assert (budget.monthly_tokens, budget.monthly_cost) == (100, None)
    (entry,) = _entries("usage.budget_set")
    assert (entry.workspace_id, entry.actor_id, entry.target) == (
        workspace_a.pk,
        carol_admin.pk,
        "workspace:acme",
    )
    assert entry.before == {"monthly_tokens": None, "monthly_cost": None}
    assert entry.after == {"monthly_tokens": 100, "monthly_cost": None}
    # The form shows what is saved.
    assert 'value="100"' in admin.get(USAGE_PAGE).content.decode()

    # Enforced where runs start: allowed while tokens are left, refused once spent.
    secret = token_for(workspace_a, erin_editor)
    assert _start_run(secret, flow).status_code == 202
    _spend(flow, erin_editor, 100)
    runs = Run.objects.count()
    refused = _start_run(secret, flow)
    assert refused.status_code == 429 and refused.json()["code"] == "budget_exceeded"
    assert Run.objects.count() == runs

    # Raising it lets runs start again; emptying both fields removes the budget.
    admin.post(USAGE_PAGE, {"monthly_tokens": "1000", "monthly_cost": "2.5"})
    assert tokens_left(workspace_a.pk) == 900
    assert _start_run(secret, flow).status_code == 202
    removed = admin.post(USAGE_PAGE, {"monthly_tokens": "", "monthly_cost": ""}, follow=True)
    assert "Budget removed" in removed.content.decode()
    assert not WorkspaceBudget.objects.exists() and tokens_left(workspace_a.pk) is None
    changes = [(e.before, e.after) for e in _entries("usage.budget_set")]
    assert changes[1:] == [
        (
            {"monthly_tokens": 100, "monthly_cost": None},
            {"monthly_tokens": 1000, "monthly_cost": "2.5"},
        ),
        (
            {"monthly_tokens": 1000, "monthly_cost": "2.5"},
            {"monthly_tokens": None, "monthly_cost": None},
        ),
    ]
    # Saving what is already saved changes nothing and records nothing.
    admin.post(USAGE_PAGE, {"monthly_tokens": "", "monthly_cost": ""})
    assert len(_entries("usage.budget_set")) == 3


def test_the_owner_may_set_it_too(client_for, workspace_a, alice_owner):
    response = client_for(alice_owner).post(USAGE_PAGE, {"monthly_cost": "12.3456"})
    assert response.status_code == 302
    assert WorkspaceBudget.objects.get().monthly_cost == Decimal("12.3456")


@pytest.mark.parametrize("who", ["erin_editor", "bob_viewer"])
def test_editors_and_viewers_read_the_budget_and_cannot_change_it(
    who, request, client_for, workspace_a
):
    WorkspaceBudget.objects.create(workspace=workspace_a, monthly_tokens=777)
    client = client_for(request.getfixturevalue(who))
    page = client.get(USAGE_PAGE).content.decode()
    assert "of 777" in page and 'data-testid="budget-form"' not in page
    refused = client.post(USAGE_PAGE, {"monthly_tokens": "1"})
    assert refused.status_code == 403
    assert WorkspaceBudget.objects.get().monthly_tokens == 777
    assert not _entries("usage.budget_set")


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"monthly_tokens": "-1"}, "monthly_tokens", "cannot be negative"),
        ({"monthly_tokens": "ten"}, "monthly_tokens", "a whole number"),
        ({"monthly_tokens": "1.5"}, "monthly_tokens", "a whole number"),
        ({"monthly_tokens": str(10**12 + 1)}, "monthly_tokens", "at most 1,000,000,000,000"),
        ({"monthly_tokens": "9" * 40}, "monthly_tokens", "at most"),
        ({"monthly_cost": "-0.01"}, "monthly_cost", "cannot be negative"),
        ({"monthly_cost": "0.00001"}, "monthly_cost", "at most 4 decimal places"),
        ({"monthly_cost": "1000000001"}, "monthly_cost", "at most 1,000,000,000"),
        ({"monthly_cost": "NaN"}, "monthly_cost", "a number"),
        ({"monthly_cost": "Infinity"}, "monthly_cost", "a number"),
        ({"monthly_cost": "1e999999"}, "monthly_cost", ""),
    ],
)
def test_bad_input_changes_nothing_and_says_why(
    fields, field, message, client_for, workspace_a, carol_admin
):
    WorkspaceBudget.objects.create(workspace=workspace_a, monthly_tokens=100)
    response = client_for(carol_admin).post(USAGE_PAGE, {"monthly_tokens": "5", **fields})
    assert response.status_code == 400
    html = response.content.decode()
    assert f'data-testid="budget-error-{field}"' in html and message in html
    budget = WorkspaceBudget.objects.get()
    assert (budget.monthly_tokens, budget.monthly_cost) == (100, None)
    assert not _entries("usage.budget_set")


def test_another_workspaces_budget_is_not_found(
    client_for, workspace_a, workspace_b, mallory_owner
):
    response = client_for(mallory_owner).post(USAGE_PAGE, {"monthly_tokens": "1"})
    assert response.status_code == 404
    assert not WorkspaceBudget.objects.exists()
    # Her own workspace's form sets only hers.
    client_for(mallory_owner).post("/w/bravo/settings/usage/", {"monthly_tokens": "9"})
    (budget,) = WorkspaceBudget.objects.all()
    assert budget.workspace_id == workspace_b.pk and tokens_left(workspace_a.pk) is None


# --- the same through the JSON API ----------------------------------------------------------


def test_the_api_reads_and_sets_the_budget_for_admins(
    workspace_a, carol_admin, erin_editor, bob_viewer, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="hi", delay_ms=0)
    admin = token_for(workspace_a, carol_admin)
    empty = Client().get(BUDGET_API, **_bearer(admin))
    assert empty.status_code == 200
    assert empty.json() == {
        "monthly_tokens": None,
        "monthly_cost": None,
        "spent_tokens": 0,
        "spent_cost": "0",
        "updated_at": None,
    }

    body = json.dumps({"monthly_tokens": 50, "monthly_cost": 2.5})
    saved = Client().put(BUDGET_API, body, **_bearer(admin))
    assert saved.status_code == 200, saved.content
    assert saved.json()["monthly_tokens"] == 50 and saved.json()["monthly_cost"] == "2.5"
    (entry,) = _entries("usage.budget_set")
    assert entry.actor_id == carol_admin.pk
    assert entry.after == {"monthly_tokens": 50, "monthly_cost": "2.5"}
    # The same again: nothing to record.
    assert Client().put(BUDGET_API, body, **_bearer(admin)).status_code == 200
    assert len(_entries("usage.budget_set")) == 1

    _spend(flow, erin_editor, 60)
    read = Client().get(BUDGET_API, **_bearer(admin)).json()
    assert (read["spent_tokens"], read["monthly_tokens"]) == (60, 50)
    refused = _start_run(token_for(workspace_a, erin_editor), flow)
    assert refused.status_code == 429 and refused.json()["code"] == "budget_exceeded"

    # Bad values: 400 with a stable code, a sentence and the fields; nothing changes.
    for bad, field in (
        ({"monthly_tokens": -1}, "monthly_tokens"),
        ({"monthly_tokens": 10**30}, "monthly_tokens"),
        ({"monthly_cost": "0.00001"}, "monthly_cost"),
        ({"monthly_cost": "-3"}, "monthly_cost"),
        ({"monthly_tokens": 5, "monthly_cost": "1e12"}, "monthly_cost"),
    ):
        response = Client().put(BUDGET_API, json.dumps(bad), **_bearer(admin))
        assert response.status_code == 400, (bad, response.content)
        answer = response.json()
        assert answer["code"] == "invalid_budget" and answer["message"], answer
        assert list(answer["detail"]) == [field] and answer["detail"][field], answer
    for unreadable in ({"monthly_tokens": "ten"}, {"monthly_cost": "abc"}, {"monthly_tokens": 1.5}):
        response = Client().put(BUDGET_API, json.dumps(unreadable), **_bearer(admin))
        assert response.status_code == 422, (unreadable, response.content)
    assert Client().put(BUDGET_API, "{", **_bearer(admin)).status_code in (400, 422)
    budget = WorkspaceBudget.objects.get()
    assert (budget.monthly_tokens, budget.monthly_cost) == (50, Decimal("2.5"))
    assert len(_entries("usage.budget_set")) == 1

    # Below admin: 403 for reading and writing; nothing changes.
    for member in (erin_editor, bob_viewer):
        secret = token_for(workspace_a, member)
        assert Client().get(BUDGET_API, **_bearer(secret)).status_code == 403
        assert Client().put(BUDGET_API, "{}", **_bearer(secret)).status_code == 403
    assert WorkspaceBudget.objects.get().monthly_tokens == 50

    # PUT replaces: an empty body removes the budget.
    removed = Client().put(BUDGET_API, "{}", **_bearer(admin))
    assert removed.status_code == 200 and removed.json()["monthly_tokens"] is None
    assert not WorkspaceBudget.objects.exists()
    assert _entries("usage.budget_set")[-1].after == {"monthly_tokens": None, "monthly_cost": None}


def test_the_api_refuses_other_workspaces_scoped_keys_and_missing_csrf(
    client_for, workspace_a, workspace_b, carol_admin, mallory_owner, token_for
):
    # Another workspace's owner: 404 with her session, 401 with her token.
    stranger = client_for(mallory_owner)
    assert stranger.get(BUDGET_API).status_code == 404
    assert stranger.put(BUDGET_API, "{}", content_type="application/json").status_code == 404
    mallory_key = token_for(workspace_b, mallory_owner)
    put = Client().put(BUDGET_API, json.dumps({"monthly_tokens": 1}), **_bearer(mallory_key))
    assert put.status_code == 401
    # A key scoped to named flows has no workspace-wide route: 403, even an admin's.
    flow = flowgraphs.demo_flow(workspace_a, carol_admin, reply="hi", delay_ms=0)
    scoped_key = api_token_create(
        workspace=workspace_a, user=carol_admin, name="bot", flow_ids=[flow.pk]
    ).secret
    body = json.dumps({"monthly_tokens": 1})
    assert Client().put(BUDGET_API, body, **_bearer(scoped_key)).status_code == 403
    # The session cookie needs the CSRF token for a write.
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(carol_admin, backend="django.contrib.auth.backends.ModelBackend")
    no_csrf = strict.put(BUDGET_API, body, content_type="application/json")
    assert no_csrf.status_code == 403
    assert not WorkspaceBudget.objects.exists() and not _entries("usage.budget_set")


# --- an API key's own budget on the tokens page ---------------------------------------------


def _key_url(token: ApiToken) -> str:
    return f"/w/acme/tokens/{token.pk}/budget/"


def test_an_admin_sets_a_keys_budget_and_the_key_is_refused_once_it_is_spent(
    client_for, workspace_a, carol_admin, erin_editor
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="hi", delay_ms=0)
    issued = api_token_create(workspace=workspace_a, user=erin_editor, name="erin-app")
    other = api_token_create(workspace=workspace_a, user=erin_editor, name="erin-other")
    admin = client_for(carol_admin)
    page = admin.get("/w/acme/tokens/").content.decode()
    # The admin sees every active key of the workspace, not only her own.
    assert 'data-testid="key-budgets"' in page and "erin-app" in page and "erin@example.com" in page

    saved = admin.post(_key_url(issued.token), {"monthly_tokens": "30"}, follow=True)
    assert saved.redirect_chain == [("/w/acme/tokens/", 302)]
    assert "Budget saved." in saved.content.decode()
    assert KeyBudget.objects.get(api_token=issued.token).monthly_tokens == 30
    (entry,) = _entries("usage.key_budget_set")
    assert (entry.workspace_id, entry.actor_id, entry.target) == (
        workspace_a.pk,
        carol_admin.pk,
        f"token:{issued.token.pk}",
    )
    assert entry.after == {
        "monthly_tokens": 30,
        "monthly_cost": None,
        "name": "erin-app",
        "prefix": issued.token.prefix,
    }

    # Its holder sees it, read-only.
    holder = client_for(erin_editor)
    mine = holder.get("/w/acme/tokens/").content.decode()
    assert "30 tokens" in mine and 'data-testid="key-budgets"' not in mine
    assert holder.post(_key_url(issued.token), {"monthly_tokens": ""}).status_code == 403
    assert KeyBudget.objects.get().monthly_tokens == 30

    # Spent by the key's own runs: the key is refused; another key of the same member is not.
    _spend(flow, erin_editor, 30, api_token=issued.token)
    refused = _start_run(issued.secret, flow)
    assert refused.status_code == 429 and refused.json()["code"] == "budget_exceeded"
    assert _start_run(other.secret, flow).status_code == 202

    # Bad input: the page says why, nothing changes, nothing is recorded.
    bad = admin.post(_key_url(issued.token), {"monthly_tokens": "-5"}, follow=True)
    assert "Budget not changed: The token budget cannot be negative." in bad.content.decode()
    bad = admin.post(_key_url(issued.token), {"monthly_cost": "0.123456"}, follow=True)
    assert "at most 4 decimal places" in bad.content.decode()
    assert KeyBudget.objects.get().monthly_tokens == 30
    assert len(_entries("usage.key_budget_set")) == 1

    # Cleared: no row, the key runs again.
    admin.post(_key_url(issued.token), {"monthly_tokens": "", "monthly_cost": ""})
    assert not KeyBudget.objects.exists()
    assert _start_run(issued.secret, flow).status_code == 202
    assert _entries("usage.key_budget_set")[-1].after["monthly_tokens"] is None


def test_another_workspaces_key_is_not_found(
    client_for, workspace_a, workspace_b, carol_admin, mallory_owner
):
    foreign = api_token_create(workspace=workspace_b, user=mallory_owner, name="theirs").token
    admin = client_for(carol_admin)
    for body in ({"monthly_tokens": "1"}, {"monthly_tokens": "-1"}):  # valid or not: 404 first
        assert admin.post(_key_url(foreign), body).status_code == 404
    assert admin.post("/w/acme/tokens/99999999999999999999/budget/", {}).status_code == 404
    assert not KeyBudget.objects.exists()
    assert AuditEntry.objects.filter(action="access.denied", workspace=workspace_a).exists()
    # And the other workspace's owner cannot budget this workspace's keys.
    mine = api_token_create(workspace=workspace_a, user=carol_admin, name="mine").token
    stranger = client_for(mallory_owner)
    assert stranger.post(_key_url(mine), {"monthly_tokens": "1"}).status_code == 404
    assert not KeyBudget.objects.exists()
