"""The server-rendered pages in a real browser: copying a new token with its button, and
comparing two runs picked in the run list (no URL typing)."""

from __future__ import annotations

import pytest

from accounts.models import ApiToken
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    open_page_fixture,
    tid,
)
from tests.runlogs import make_run

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def test_a_new_token_is_copied_with_its_button(open_page, live_stack, workspace_a, erin_editor):
    member = open_page(erin_editor)
    member.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=live_stack.http_url
    )
    page = member.page
    member.goto("/w/acme/tokens/")
    page.fill("#token-name", "CI")
    page.click("button:has-text('Create token')")
    shown = page.locator("#new-token").inner_text().strip()
    assert ApiToken.objects.get(user=erin_editor).prefix in shown
    page.click("button[data-copy]")
    page.wait_for_selector("button[data-copy]:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == shown
    assert member.console_errors == []


def test_two_runs_picked_in_the_list_are_compared(open_page, workspace_a, alice_owner):
    first = make_run(workspace_a, alice_owner, reply="first answer")
    second = make_run(workspace_a, alice_owner, flow=first.flow, reply="second answer")
    member = open_page(alice_owner)
    page = member.page
    member.goto("/w/acme/runs/")
    page.check(f"input[name=run][value='{first.pk}']")
    page.check(f"input[name=run][value='{second.pk}']")
    page.click(tid("compare-selected"))
    page.wait_for_selector("h1:has-text('Compare runs')")
    assert f"/runs/{first.pk}/compare/{second.pk}/" in page.url
    body = page.locator("main").inner_text()
    assert "first answer" in body and "second answer" in body
    member.goto(f"/w/acme/runs/{second.pk}/")
    page.wait_for_selector(tid("run-timeline"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "run-page-summary.png"), full_page=True)
    assert member.console_errors == []
