"""The budget forms in a real browser: an admin saves the workspace's budget on the usage
page (shown against the month's spend) and a key's on the tokens page; an editor sees both
read-only. Screenshot:
test-artifacts/screenshots/usage-budget.png (a copy is docs/screenshots/usage-budget.png)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.services import api_token_create
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    demo_flow,
    open_page_fixture,
    tid,
)
from tests.runlogs import used_run
from usage.models import KeyBudget, ModelPrice, WorkspaceBudget
from usage.services import record_run_usage

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def _used(flow, user, input_tokens: int, output_tokens: int) -> None:
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens, "model": "gpt-4o-mini"}
    record_run_usage(run_id=str(used_run(flow, user, usage).pk))


def test_an_admin_saves_the_budget_on_the_usage_page_and_an_editor_reads_it(
    open_page, live_stack, workspace_a, carol_admin, erin_editor
):
    ModelPrice.objects.create(
        model="gpt-4o-mini", input_per_million=Decimal("0.15"), output_per_million=Decimal("0.6")
    )
    flow = demo_flow(workspace_a, erin_editor, reply="ok", delay_ms=0)
    flow.name = "Support bot"
    flow.save()
    _used(flow, erin_editor, 12_000, 3_400)

    admin = open_page(carol_admin)
    page = admin.page
    admin.goto("/w/acme/settings/usage/")
    page.fill("#id_monthly_tokens", "50000")
    page.fill("#id_monthly_cost", "12.5")
    page.click(tid("budget-save"))
    page.wait_for_selector(".messages li:has-text('Budget saved.')")
    month = page.locator(tid("usage-month")).inner_text()
    assert "15400 of 50000" in month and "of 12.5000" in month
    assert page.input_value("#id_monthly_tokens") == "50000"
    assert page.input_value("#id_monthly_cost") == "12.5"
    budget = WorkspaceBudget.objects.get(workspace=workspace_a)
    assert (budget.monthly_tokens, budget.monthly_cost) == (50_000, Decimal("12.5"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "usage-budget.png"))
    assert admin.console_errors == []

    # An API key's own budget, on the tokens page: every active key of the workspace.
    key = api_token_create(workspace=workspace_a, user=erin_editor, name="support-widget").token
    admin.goto("/w/acme/tokens/")
    row = page.locator(f"{tid('key-budget-row')}[data-token='{key.pk}']")
    row.locator(tid("key-budget-tokens")).fill("2000")
    row.locator(tid("key-budget-save")).click()
    page.wait_for_selector(".messages li:has-text('Budget saved.')")
    assert KeyBudget.objects.get(api_token=key).monthly_tokens == 2000
    assert row.locator(tid("key-budget-tokens")).input_value() == "2000"
    page.screenshot(path=str(SCREENSHOTS / "tokens-key-budgets.png"), full_page=True)
    assert admin.console_errors == []

    editor = open_page(erin_editor)
    editor.goto("/w/acme/settings/usage/")
    assert "15400 of 50000" in editor.page.locator(tid("usage-month")).inner_text()
    assert editor.page.locator(tid("budget-form")).count() == 0
    editor.goto("/w/acme/tokens/")
    assert editor.page.locator(tid("token-budget")).inner_text() == "2000 tokens"
    assert editor.page.locator(tid("key-budgets")).count() == 0
    assert editor.console_errors == []
