"""The workspace audit page and its exports; the audit trail in the admin."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership
from audit.models import AuditEntry
from audit.services import record
from audit.views import PAGE_SIZE
from flows import services as flow_services


def _acting(workspace, user) -> Membership:
    return Membership.objects.get(workspace=workspace, user=user)


@pytest.fixture
def trails(workspace_a, workspace_b, alice_owner, erin_editor, mallory_owner):
    """Both workspaces have a trail; workspace_b's names are easy to spot."""
    flow_services.flow_create(
        workspace=workspace_a, acting=_acting(workspace_a, erin_editor), name="acme-visible-flow"
    )
    flow_services.flow_create(
        workspace=workspace_b, acting=_acting(workspace_b, mallory_owner), name="bravo-secret-flow"
    )


def _stream(response) -> str:
    assert response.streaming, response
    return b"".join(response.streaming_content).decode()


def _jsonl(response) -> list[dict]:
    return [json.loads(line) for line in _stream(response).splitlines()]


# --- who sees what ---------------------------------------------------------------------------
@pytest.mark.parametrize("who", ["alice_owner", "carol_admin"])
def test_owners_and_admins_see_their_workspaces_entries_only(request, who, trails, client_for):
    client = client_for(request.getfixturevalue(who))
    page = client.get("/w/acme/audit/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "acme-visible-flow" in html and "flow.create" in html
    assert "{&quot;name&quot;: &quot;acme-visible-flow&quot;}" in html  # JSON, not a repr
    assert "bravo-secret-flow" not in html

    rows = _jsonl(client.get("/w/acme/audit/export?format=jsonl"))
    workspace_a_id = Membership.objects.filter(workspace__slug="acme").first().workspace_id
    assert rows and {row["workspace_id"] for row in rows} == {workspace_a_id}
    assert "bravo-secret-flow" not in json.dumps(rows)
    assert [row["seq"] for row in rows] == sorted(row["seq"] for row in rows)


@pytest.mark.parametrize("who", ["erin_editor", "bob_viewer"])
def test_editors_and_viewers_are_refused(request, who, trails, client_for):
    client = client_for(request.getfixturevalue(who))
    assert client.get("/w/acme/audit/").status_code == 403
    assert client.get("/w/acme/audit/export?format=jsonl").status_code == 403
    assert client.get("/w/acme/audit/export?format=csv").status_code == 403
    assert not AuditEntry.objects.filter(action="audit.export").exists()


def test_other_workspaces_admins_and_strangers_get_404(trails, client_for, mallory_owner):
    mallory = client_for(mallory_owner)
    for path in (
        "/w/acme/audit/",
        "/w/acme/audit/export?format=jsonl",
        "/w/acme/audit/export?format=csv",
    ):
        assert mallory.get(path).status_code == 404, path
    own = mallory.get("/w/bravo/audit/").content.decode()
    assert "bravo-secret-flow" in own and "acme-visible-flow" not in own
    rows = _jsonl(mallory.get("/w/bravo/audit/export"))
    assert "acme-visible-flow" not in json.dumps(rows)
    anonymous = client_for(None).get("/w/acme/audit/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


# --- filters, paging, exports ----------------------------------------------------------------
def test_filters_by_action_actor_and_dates(trails, client_for, alice_owner, workspace_a):
    client = client_for(alice_owner)
    rows = _jsonl(client.get("/w/acme/audit/export?format=jsonl&action=flow.create"))
    assert rows and {row["action"] for row in rows} == {"flow.create"}
    rows = _jsonl(client.get("/w/acme/audit/export?actor=ERIN@example.com"))
    assert rows and {row["actor"] for row in rows} == {"erin@example.com"}
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    assert _jsonl(client.get(f"/w/acme/audit/export?since={tomorrow}")) == []
    today = timezone.now().date().isoformat()
    assert _jsonl(client.get(f"/w/acme/audit/export?since={today}&until={today}"))
    page = client.get("/w/acme/audit/?action=member.invite").content.decode()
    assert "acme-visible-flow" not in page and "No entries match" in page


def test_bad_filters_get_a_clear_400(workspace_a, client_for, alice_owner):
    client = client_for(alice_owner)
    response = client.get("/w/acme/audit/export?format=xml")
    assert response.status_code == 400 and b"format=jsonl" in response.content
    response = client.get("/w/acme/audit/export?since=2026-02-01&until=2026-01-01")
    assert response.status_code == 400
    assert client.get("/w/acme/audit/?since=not-a-date").status_code == 400
    assert client.get("/w/acme/audit/?action=not.registered").status_code == 400
    assert client.get("/w/acme/audit/?before=abc").status_code == 200


def test_csv_export_is_recorded_and_defuses_formulas(workspace_a, client_for, alice_owner):
    with transaction.atomic():
        record(
            action="flow.create", workspace=workspace_a, actor=alice_owner, target="=HYPERLINK(1)"
        )
    response = client_for(alice_owner).get("/w/acme/audit/export?format=csv&action=flow.create")
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(_stream(response))))
    assert [row["target"] for row in rows] == ["'=HYPERLINK(1)"]
    export = AuditEntry.objects.get(action="audit.export")
    assert export.actor_id == alice_owner.pk and export.workspace_id == workspace_a.pk
    assert export.after == {"format": "csv", "filters": {"action": "flow.create"}}


def test_page_is_paged_by_seq_with_bounded_queries(
    workspace_a, client_for, alice_owner, django_assert_max_num_queries
):
    with transaction.atomic():
        for i in range(PAGE_SIZE + 7):
            record(
                action="flow.create", workspace=workspace_a, actor=alice_owner, target=f"flow:p{i}"
            )
    client = client_for(alice_owner)
    with django_assert_max_num_queries(12):
        first = client.get("/w/acme/audit/")
    html = first.content.decode()
    assert f"flow:p{PAGE_SIZE + 6}<" in html and "flow:p6<" not in html
    older = first.context["older"]
    assert older is not None
    second = client.get(f"/w/acme/audit/?before={older}").content.decode()
    assert "flow:p6<" in second and "flow:p0<" in second and f"flow:p{PAGE_SIZE + 6}<" not in second


# --- the admin --------------------------------------------------------------------------------
@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops@example.com", "x", is_staff=True)


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root@example.com", "x")


@pytest.mark.parametrize("who", ["staff", "superuser"])
def test_platform_staff_see_every_workspace_in_the_admin(request, who, trails, client_for):
    client = client_for(request.getfixturevalue(who))
    page = client.get("/admin/audit/auditentry/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "flow:" in html
    entries = AuditEntry.objects.filter(action="flow.create")
    assert {e.workspace.slug for e in entries} == {"acme", "bravo"}
    for entry in entries:
        assert f"/admin/audit/auditentry/{entry.pk}/change/" in html
    assert "bravo" in html and "acme" in html


@pytest.mark.parametrize("who", ["staff", "superuser"])
def test_nobody_can_add_change_or_delete_entries_in_the_admin(request, who, trails, client_for):
    client = client_for(request.getfixturevalue(who))
    entry = AuditEntry.objects.filter(action="flow.create").first()
    snapshot = (entry.target, entry.hash)
    detail = client.get(f"/admin/audit/auditentry/{entry.pk}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content and b"deletelink" not in detail.content
    assert (
        client.post(
            f"/admin/audit/auditentry/{entry.pk}/change/", {"target": "flow:evil"}
        ).status_code
        == 403
    )
    assert (
        client.post(f"/admin/audit/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert client.get("/admin/audit/auditentry/add/").status_code == 403
    bulk = client.post(
        "/admin/audit/auditentry/",
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    entry.refresh_from_db()
    assert (entry.target, entry.hash) == snapshot
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_members_without_staff_cannot_open_the_admin(trails, client_for, alice_owner):
    response = client_for(alice_owner).get("/admin/audit/auditentry/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_audit_link_shows_for_admins_only(workspace_a, carol_admin, bob_viewer, client_for):
    admin_page = client_for(carol_admin).get("/w/acme/").content.decode()
    viewer_page = client_for(bob_viewer).get("/w/acme/").content.decode()
    assert 'href="/w/acme/audit/"' in admin_page
    assert 'href="/w/acme/audit/"' not in viewer_page
