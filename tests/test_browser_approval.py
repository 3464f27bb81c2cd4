"""Human approval in a real browser against the live stack: an editor runs a flow with an
approval node from the editor; the run panel shows the question while the run waits; a
viewer watching the run's page sees it without the buttons; the editor edits the value,
comments and approves, and the run goes on to its end with the edited value.
Screenshot: test-artifacts/screenshots/approval*.png."""

from __future__ import annotations

import pytest

from accounts.models import Membership
from flows.services import flow_create
from runs.models import Approval, ApprovalStatus, Run, RunStatus
from tests.browser import SCREENSHOTS, browser_fixture, open_page_fixture, tid  # noqa: F401
from tests.test_runs_approval_live import approval_graph

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def test_an_editor_approves_with_an_edited_value_and_a_viewer_only_sees_the_question(
    open_page, live_stack, workspace_a, erin_editor, bob_viewer
):
    flow = flow_create(
        workspace=workspace_a,
        acting=Membership.objects.get(workspace=workspace_a, user=erin_editor),
        name="Refund with approval",
        graph=approval_graph(),
    )
    editor = open_page(erin_editor)
    page = editor.page
    editor.goto(f"/w/acme/flows/{flow.pk}/")
    page.wait_for_selector(f"{tid('connection')}[data-state='open']")
    page.click(tid("tab-run"))
    page.fill(tid("run-input-input"), "退款 120 元")
    page.click(tid("run-button"))
    card = f"{tid('approval-check')}[data-state='waiting']"
    page.wait_for_selector(card)
    page.wait_for_selector(f"{tid('run-status')}[data-status='waiting']")
    run = Run.objects.get(flow=flow)
    assert page.locator(tid("approval-value-check")).input_value() == "退款 120 元"

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # A viewer on the run's page sees what is asked, and cannot decide.
    viewer = open_page(bob_viewer)
    viewer.goto(f"/w/acme/runs/{run.pk}/")
    viewer.page.wait_for_selector(card)
    assert viewer.page.locator(tid("approve-check")).count() == 0
    assert "decides" in viewer.page.locator(tid("approval-check")).inner_text()

    # The Approvals page lists it, with the way to the run.
    viewer.goto("/w/acme/approvals/")
    viewer.page.wait_for_selector(f"{tid('approvals')} tr[data-run='{run.pk}']")
    assert "Send this reply?" in viewer.page.locator(tid("approvals")).inner_text()
    viewer.page.screenshot(path=str(SCREENSHOTS / "approvals-page.png"))
    viewer.goto(f"/w/acme/runs/{run.pk}/")

    page.fill(tid("approval-value-check"), "退款 100 元")
    page.fill(tid("approval-comment-check"), "金额已核对")
    page.screenshot(path=str(SCREENSHOTS / "approval-waiting.png"))
    page.click(tid("approve-check"))
    page.wait_for_selector(f"{tid('approval-check')}[data-state='approved']")
    page.wait_for_selector(f"{tid('run-status')}[data-status='success']", timeout=60_000)
    assert "金额已核对" in page.locator(tid("approval-check")).inner_text()
    page.wait_for_selector(f"{tid('final-ok')}:has-text('退款 100 元')")
    page.screenshot(path=str(SCREENSHOTS / "approval-decided.png"))
    # The viewer's page followed the run to its end too.
    viewer.page.wait_for_selector(f"{tid('approval-check')}[data-state='approved']")

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.outputs["ok"] == "退款 100 元"
    approval = Approval.objects.get(run=run)
    assert approval.status == ApprovalStatus.APPROVED and approval.decided_by == erin_editor
    assert editor.console_errors == [] and viewer.console_errors == []
