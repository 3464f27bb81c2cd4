"""The usage page (Settings), the roll-up's writing and the budget's arithmetic, in
process: who sees what, one workspace's usage never on another's page, the price table
in the admin (audited), and a recorded run counted once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import Membership
from accounts.services import api_token_create
from audit.models import AuditEntry
from chat.services import flow_call
from runs.models import Run, RunStatus
from runs.services import RunRefused
from tests import flowgraphs
from tests.runlogs import used_run
from usage.models import KeyBudget, ModelPrice, UsageDay, UsageRecord, WorkspaceBudget
from usage.selectors import tokens_left
from usage.services import record_run_usage

pytestmark = pytest.mark.django_db


_finished_run = used_run  # flow, user, usage, event=...: a run whose log reports usage


def _usage(i: int, o: int, model: str = "gpt-x") -> dict:
    return {"input_tokens": i, "output_tokens": o, "model": model}


def test_recording_a_run_twice_counts_it_once_and_prices_it(workspace_a, alice_owner):
    ModelPrice.objects.create(
        model="gpt-x", input_per_million=Decimal("1"), output_per_million=Decimal("3")
    )
    flow = flowgraphs.demo_flow(workspace_a, alice_owner, reply="hi", delay_ms=0)
    run = _finished_run(flow, alice_owner, _usage(1000, 2000))
    assert record_run_usage(run_id=str(run.pk)) == 1
    assert record_run_usage(run_id=str(run.pk)) == 0
    (record,) = UsageRecord.objects.all()
    assert record.cost == Decimal("0.007")  # 1000 x 1/1M + 2000 x 3/1M
    (day,) = UsageDay.objects.all()
    assert (day.input_tokens, day.output_tokens, day.calls, day.cost) == (
        1000,
        2000,
        1,
        Decimal("0.007"),
    )


def test_hostile_usage_in_a_log_counts_as_nothing(workspace_a, alice_owner):
    flow = flowgraphs.demo_flow(workspace_a, alice_owner, reply="hi", delay_ms=0)
    run = _finished_run(
        flow, alice_owner, {"input_tokens": -5, "output_tokens": "9", "model": ["x"]}
    )
    record_run_usage(run_id=str(run.pk))
    (record,) = UsageRecord.objects.all()
    assert (record.input_tokens, record.output_tokens, record.model) == (0, 0, "")


def test_a_budget_leaves_tokens_then_none(workspace_a, alice_owner):
    flow = flowgraphs.demo_flow(workspace_a, alice_owner, reply="hi", delay_ms=0)
    assert tokens_left(workspace_a.pk) is None
    budget = WorkspaceBudget.objects.create(workspace=workspace_a, monthly_tokens=100)
    assert tokens_left(workspace_a.pk) == 100
    record_run_usage(run_id=str(_finished_run(flow, alice_owner, _usage(30, 40)).pk))
    assert tokens_left(workspace_a.pk) == 30
    # A cost budget counts in tokens at the dearest price: 0.001 left at 10/1M = 100.
    ModelPrice.objects.create(
        model="gpt-x", input_per_million=Decimal("5"), output_per_million=Decimal("10")
    )
    budget.monthly_tokens, budget.monthly_cost = None, Decimal("0.001")
    budget.save()
    assert tokens_left(workspace_a.pk) == 100
    record_run_usage(run_id=str(_finished_run(flow, alice_owner, _usage(100, 100)).pk))
    assert tokens_left(workspace_a.pk) == 0  # 0.0015 spent: nothing left, never negative


def test_last_months_usage_does_not_count_against_this_months_budget(workspace_a, alice_owner):
    flow = flowgraphs.demo_flow(workspace_a, alice_owner, reply="hi", delay_ms=0)
    UsageDay.objects.create(
        day=timezone.now().date().replace(day=1) - timedelta(days=1),
        workspace=workspace_a,
        flow=flow,
        user=alice_owner,
        model="m",
        input_tokens=500,
    )
    WorkspaceBudget.objects.create(workspace=workspace_a, monthly_tokens=100)
    assert tokens_left(workspace_a.pk) == 100


def test_the_page_shows_tokens_to_members_and_cost_to_admins(
    client_for, workspace_a, alice_owner, bob_viewer, workspace_b, mallory_owner
):
    ModelPrice.objects.create(
        model="gpt-x", input_per_million=Decimal("1"), output_per_million=Decimal("1")
    )
    flow = flowgraphs.demo_flow(workspace_a, alice_owner, reply="hi", delay_ms=0)
    flow.name = "Support bot"
    flow.save()
    record_run_usage(run_id=str(_finished_run(flow, alice_owner, _usage(120, 80)).pk))
    other = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="hi", delay_ms=0)
    other.name = "Secret flow"
    other.save()
    record_run_usage(
        run_id=str(_finished_run(other, mallory_owner, _usage(7777, 1, "other-model")).pk)
    )

    owner_page = client_for(alice_owner).get("/w/acme/settings/usage/")
    assert owner_page.status_code == 200
    html = owner_page.content.decode()
    assert 'data-tokens="200"' in html and "Support bot" in html and "gpt-x" in html
    assert "<th>Cost</th>" in html and "0.0002" in html
    assert "Secret flow" not in html and "other-model" not in html and "7777" not in html

    viewer_page = client_for(bob_viewer).get("/w/acme/settings/usage/")
    assert viewer_page.status_code == 200
    html = viewer_page.content.decode()
    assert 'data-tokens="200"' in html and "<th>Cost</th>" not in html

    # Another workspace's page is not found to a non-member.
    assert client_for(mallory_owner).get("/w/acme/settings/usage/").status_code == 404


def test_the_price_table_is_audited_in_the_admin(staff_client):
    response = staff_client.post(
        "/admin/usage/modelprice/add/",
        {
            "model": "gpt-x",
            "input_per_million": "2.5",
            "output_per_million": "10",
            "currency": "USD",
        },
    )
    assert response.status_code == 302, response.content[:500]
    price = ModelPrice.objects.get()
    entry = AuditEntry.objects.get(action="model_price.create")
    assert entry.after == {
        "model": "gpt-x",
        "input_per_million": "2.5",
        "output_per_million": "10",
        "currency": "USD",
    }
    staff_client.post(
        f"/admin/usage/modelprice/{price.pk}/change/",
        {"model": "gpt-x", "input_per_million": "3", "output_per_million": "10", "currency": "USD"},
    )
    changed = AuditEntry.objects.get(action="model_price.update")
    assert changed.before == {"input_per_million": "2.5"}
    assert changed.after == {"input_per_million": "3"}
    # Bad input: refused, nothing changes.
    bad = staff_client.post(
        f"/admin/usage/modelprice/{price.pk}/change/",
        {
            "model": "gpt-x",
            "input_per_million": "-1",
            "output_per_million": "10",
            "currency": "USD",
        },
    )
    assert bad.status_code == 200
    price.refresh_from_db()
    assert price.input_per_million == Decimal("3")


def test_a_keys_budget_counts_only_its_own_runs(workspace_a, alice_owner):
    flow = flowgraphs.demo_flow(workspace_a, alice_owner, reply="hi", delay_ms=0)
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    key = api_token_create(workspace=workspace_a, user=alice_owner, name="app").token
    other = api_token_create(workspace=workspace_a, user=alice_owner, name="other").token
    KeyBudget.objects.create(api_token=key, monthly_tokens=50)
    run = _finished_run(flow, alice_owner, _usage(10, 20))
    run.api_token = key
    run.save()
    record_run_usage(run_id=str(run.pk))
    record_run_usage(run_id=str(_finished_run(flow, alice_owner, _usage(500, 500)).pk))
    assert tokens_left(workspace_a.pk, key.pk) == 20  # the key's own 30, not the 1,030
    assert tokens_left(workspace_a.pk, other.pk) is None and tokens_left(workspace_a.pk) is None
    keyed = UsageDay.objects.get(api_token=key)
    assert (keyed.input_tokens, keyed.output_tokens) == (10, 20)
    # A workspace budget still applies to every key; the fewer tokens left wins.
    WorkspaceBudget.objects.create(workspace=workspace_a, monthly_tokens=1040)
    assert tokens_left(workspace_a.pk, key.pk) == 10
    # The run API refuses a spent key before anything runs.
    KeyBudget.objects.filter(api_token=key).update(monthly_tokens=30)
    with pytest.raises(RunRefused) as refused:
        flow_call(
            workspace=workspace_a,
            acting=acting,
            flow=flow,
            version_number=1,
            inputs={},
            api_token=key,
        )
    assert refused.value.code == "budget_exceeded"
    assert Run.objects.count() == 2


def test_a_reaped_run_is_charged_what_its_log_holds(workspace_a, alice_owner):
    from runs.services import reap_stale_runs

    flow = flowgraphs.demo_flow(workspace_a, alice_owner, reply="hi", delay_ms=0)
    run = _finished_run(flow, alice_owner, _usage(3, 4))
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        finished_at=None,
        last_seq=1,
        lease_expires_at=timezone.now() - timedelta(minutes=1),
    )
    assert reap_stale_runs() == [str(run.pk)]
    (record,) = UsageRecord.objects.filter(run=run)
    assert (record.input_tokens, record.output_tokens) == (3, 4)


def test_a_workspace_budget_is_set_in_the_admin_and_audited(staff_client, workspace_a):
    response = staff_client.post(
        "/admin/usage/workspacebudget/add/",
        {"workspace": workspace_a.pk, "monthly_tokens": "5000", "monthly_cost": ""},
    )
    assert response.status_code == 302, response.content[:500]
    entry = AuditEntry.objects.get(action="budget.set")
    assert entry.workspace_id == workspace_a.pk
    assert entry.after == {"monthly_tokens": "5000", "monthly_cost": None}
    assert tokens_left(workspace_a.pk) == 5000
    bad = staff_client.post(
        "/admin/usage/workspacebudget/add/",
        {"workspace": workspace_a.pk, "monthly_tokens": "-1", "monthly_cost": ""},
    )
    assert bad.status_code == 200 and WorkspaceBudget.objects.count() == 1
