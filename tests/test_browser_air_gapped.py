"""The product works air-gapped: every page a member, an admin or platform staff opens loads
everything from the deployment itself (no CDN, no web fonts, no analytics). Each page is
opened in a real browser that records every request it makes; `/api/docs` must also render
its operations (it used to be blank offline: Swagger UI came from a CDN)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from accounts.models import User
from runs.models import Run
from tests.browser import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser_fixture,
    demo_flow,
    open_page_fixture,
)
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def _pages(flow_id: int, run_id: str) -> list[str]:
    return [
        "/w/acme/",
        "/w/acme/flows/",
        f"/w/acme/flows/{flow_id}/",
        f"/w/acme/flows/{flow_id}/versions/",
        "/w/acme/runs/",
        f"/w/acme/runs/{run_id}/",
        "/w/acme/settings/connections/",
        "/w/acme/members/",
        "/w/acme/tokens/",
        "/w/acme/audit/",
        "/api/docs",
        "/accounts/password/change/",
    ]


def test_no_page_loads_anything_from_another_host(open_page, live_stack, workspace_a, alice_owner):
    flow = demo_flow(workspace_a, alice_owner, reply="hello", delay_ms=0)
    run = Run.objects.create(
        workspace=workspace_a,
        flow=flow,
        flow_version=flow.versions.get(),
        session_id="airgap",
        started_by=alice_owner,
    )
    owner = open_page(alice_owner)
    page = owner.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    local = urlsplit(live_stack.http_url).netloc
    for path in _pages(flow.pk, str(run.pk)):
        owner.goto(path)
        page.wait_for_load_state("networkidle")
    page.goto(live_stack.http_url + "/api/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path")  # the operations rendered
    assert page.locator(".swagger-ui .info .title").inner_text().startswith("Flowdeck API")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "api-docs.png"))

    # Platform staff's admin too.
    User.objects.create_superuser("staff@example.com", PASSWORD)
    staff = owner.context.new_page()
    staff.on("request", lambda request: requested.append(request.url))
    staff.goto(live_stack.http_url + "/admin/login/")
    staff.fill("input[name=username]", "staff@example.com")
    staff.fill("input[name=password]", PASSWORD)
    staff.click("input[type=submit]")
    staff.wait_for_load_state("networkidle")
    staff.goto(live_stack.http_url + f"/admin/runs/run/{run.pk}/change/")
    staff.wait_for_load_state("networkidle")

    elsewhere = sorted({url for url in requested if urlsplit(url).netloc not in {local, ""}})
    assert elsewhere == [], elsewhere
    assert len(requested) > 40  # the pages really loaded their assets through this recorder
    assert owner.console_errors == []
