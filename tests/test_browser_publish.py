"""Publishing from the versions page in a real browser: Publish on a version, the
"Published" badge, rolling back to an older version, and the one-call API following the
pointer."""

from __future__ import annotations

import httpx
import pytest

from audit.models import AuditEntry
from chat.models import Publication
from tests import flowgraphs
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    open_page_fixture,
    tid,
)
from tests.test_chat_publish import _add_version

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def _row(version: int) -> str:
    return f"tr[data-version='{version}']"


def test_publish_and_roll_back_by_clicking_on_the_versions_page(
    open_page, live_stack, workspace_a, erin_editor, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="old answer", delay_ms=0)
    _add_version(flow, flowgraphs.demo_graph(reply="new answer", delay_ms=0))
    token = token_for(workspace_a, erin_editor)

    def called() -> dict:
        return httpx.post(
            f"{live_stack.http_url}/api/w/acme/flows/{flow.pk}/run",
            headers={"Authorization": f"Bearer {token}"},
            json={"inputs": {"input": "hi"}},
            timeout=60,
        ).json()

    member = open_page(erin_editor)
    page = member.page
    member.goto(f"/w/acme/flows/{flow.pk}/versions/")
    assert page.locator(tid("published-badge")).count() == 0
    page.click(f"{_row(2)} button:has-text('Publish')")
    page.wait_for_selector(f"{_row(2)} {tid('published-badge')}")
    assert page.locator(tid("published-badge")).count() == 1
    assert Publication.objects.get(flow=flow).version.number == 2
    assert called()["outputs"] == {"output": "new answer"}

    page.click(f"{_row(1)} button:has-text('Roll back to this')")
    page.wait_for_selector(f"{_row(1)} {tid('published-badge')}")
    assert page.locator(f"{_row(2)} {tid('published-badge')}").count() == 0
    assert "v1 is published" in page.locator(tid("publication")).inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "versions-published.png"), full_page=True)
    assert called()["outputs"] == {"output": "old answer"}

    trail = AuditEntry.objects.filter(action="flow.publish").order_by("pk")
    afters = [e.after or {} for e in trail]
    assert [(a["version"], a["rollback"]) for a in afters] == [(2, False), (1, True)]
    assert member.console_errors == []


def test_a_viewer_sees_the_badge_but_no_publish_button(
    open_page, workspace_a, erin_editor, alice_owner, bob_viewer
):
    from accounts.models import Membership
    from chat.services import flow_publish

    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="x", delay_ms=0)
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    flow_publish(workspace=workspace_a, acting=acting, flow=flow, version_number=1)
    member = open_page(bob_viewer)
    member.goto(f"/w/acme/flows/{flow.pk}/versions/")
    member.page.wait_for_selector(f"{_row(1)} {tid('published-badge')}")
    assert (
        member.page.locator("button:has-text('Publish'), button:has-text('Unpublish')").count() == 0
    )
    assert member.console_errors == []
