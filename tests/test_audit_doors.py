"""Every change the audit registry names is recorded whichever door it comes through:
Django's admin (forms, inlines, bulk actions, deletes), the pages, the API and commands."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import ApiToken, Membership, Role, User
from accounts.services import api_token_create
from audit.models import AuditEntry
from flows import services as flow_services
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("seq"))


def _last(action: str) -> AuditEntry:
    entries = _entries(action)
    assert entries, f"no {action} entry"
    return entries[-1]


def _user_form(user: User, **changes: object) -> dict[str, object]:
    form = {
        "email": user.email,
        "name": user.name,
        "is_active": "on" if user.is_active else "",
        "is_staff": "on" if user.is_staff else "",
        "is_superuser": "on" if user.is_superuser else "",
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v != ""}


# --- the admin ------------------------------------------------------------------------------
def test_admin_bulk_token_revoke_records_each_token(staff_client, staff, workspace_a, alice_owner):
    tokens = [
        api_token_create(workspace=workspace_a, user=alice_owner, name=f"t{i}").token
        for i in range(2)
    ]
    response = staff_client.post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [t.pk for t in tokens]},
    )
    assert response.status_code == 302
    entries = _entries("token.revoke")
    assert sorted(e.target for e in entries) == sorted(f"token:{t.pk}" for t in tokens)
    assert all(e.actor_id == staff.pk and e.workspace_id == workspace_a.pk for e in entries)
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 0


def test_admin_membership_role_change_is_recorded(staff_client, staff, workspace_a, erin_editor):
    membership = Membership.objects.get(user=erin_editor)
    response = staff_client.post(
        reverse("admin:accounts_membership_change", args=[membership.pk]),
        {"user": erin_editor.pk, "workspace": workspace_a.pk, "role": Role.ADMIN},
    )
    assert response.status_code == 302, response.content[:2000]
    entry = _last("member.role_change")
    assert entry.actor_id == staff.pk and entry.workspace_id == workspace_a.pk
    assert entry.before == {"role": "editor", "email": erin_editor.email}
    assert entry.after == {"role": "admin"}


def test_admin_workspace_inline_role_change_and_allowlist_change_are_recorded(
    staff_client, staff, workspace_a, alice_owner, erin_editor
):
    members = list(Membership.objects.filter(workspace=workspace_a).order_by("pk"))
    form = {
        "name": workspace_a.name,
        "slug": workspace_a.slug,
        "http_allowlist": json.dumps(["api.example.com"]),
        "memberships-TOTAL_FORMS": str(len(members)),
        "memberships-INITIAL_FORMS": str(len(members)),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    for i, m in enumerate(members):
        role = Role.VIEWER if m.user_id == erin_editor.pk else m.role
        form |= {
            f"memberships-{i}-id": str(m.pk),
            f"memberships-{i}-workspace": str(workspace_a.pk),
            f"memberships-{i}-user": str(m.user_id),
            f"memberships-{i}-role": role,
        }
    response = staff_client.post(
        reverse("admin:accounts_workspace_change", args=[workspace_a.pk]), form
    )
    assert response.status_code == 302, response.content[:3000]
    update = _last("workspace.update")
    assert update.before == {"http_allowlist": []}
    assert update.after == {"http_allowlist": ["api.example.com"]}
    assert update.actor_id == staff.pk
    role = _last("member.role_change")
    assert role.before["role"] == "editor" and role.after == {"role": "viewer"}


def test_admin_user_deactivation_and_permission_change_are_recorded(
    staff_client, staff, workspace_a, erin_editor
):
    url = reverse("admin:accounts_user_change", args=[erin_editor.pk])
    response = staff_client.post(url, _user_form(erin_editor, is_active="", is_staff="on"))
    assert response.status_code == 302, response.content[:2000]
    deactivated = _last("user.deactivate")
    assert deactivated.target == f"user:{erin_editor.pk}" and deactivated.actor_id == staff.pk
    update = _last("user.update")
    assert update.before == {"is_staff": False} and update.after == {"is_staff": True}


def test_admin_password_change_is_recorded(staff_client, staff, erin_editor):
    url = reverse("admin:auth_user_password_change", args=[erin_editor.pk])
    response = staff_client.post(
        url,
        {
            "password1": "an-admin-set-pass-77",
            "password2": "an-admin-set-pass-77",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    entry = _last("auth.password_change")
    assert entry.target == f"user:{erin_editor.pk}" and entry.actor_id == staff.pk


def test_admin_membership_delete_is_recorded(staff_client, staff, workspace_a, erin_editor):
    membership = Membership.objects.get(user=erin_editor)
    response = staff_client.post(
        reverse("admin:accounts_membership_delete", args=[membership.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    entry = _last("member.remove")
    assert entry.target == f"membership:{membership.pk}" and entry.actor_id == staff.pk


# --- pages, commands and what was missing -----------------------------------------------------
def test_password_change_on_the_page_and_by_reset_link_are_recorded(client, erin_editor):
    client.post(reverse("login"), {"username": erin_editor.email, "password": PASSWORD})
    new = "a-fresh-passphrase-99"
    client.post(
        "/accounts/password/change/",
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    page = _last("auth.password_change")
    assert page.actor_id == erin_editor.pk and page.ip == "127.0.0.1"
    erin_editor.refresh_from_db()
    uid = urlsafe_base64_encode(force_bytes(erin_editor.pk))
    token = default_token_generator.make_token(erin_editor)
    anonymous = Client()
    set_url = anonymous.get(f"/accounts/reset/{uid}/{token}/")["Location"]
    done = anonymous.post(set_url, {"new_password1": new + "x", "new_password2": new + "x"})
    assert done.status_code == 302
    assert len(_entries("auth.password_change")) == 2
    assert _last("auth.password_change").actor_id == erin_editor.pk  # the reset's holder


def test_changepassword_command_is_recorded(erin_editor, monkeypatch):
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "cmd-set-passphrase-55")
    call_command("changepassword", erin_editor.email)
    assert _last("auth.password_change").target == f"user:{erin_editor.pk}"


def test_logout_is_recorded(client, erin_editor):
    client.post(reverse("login"), {"username": erin_editor.email, "password": PASSWORD})
    client.post(reverse("logout"))
    entry = _last("auth.logout")
    assert entry.actor_id == erin_editor.pk


def test_a_role_denial_is_recorded_and_still_403(client, workspace_a, bob_viewer, token_for):
    secret = token_for(workspace_a, bob_viewer)
    response = client.post(
        "/api/w/acme/flows",
        json.dumps({"name": "not allowed"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 403
    entry = _last("access.denied")
    assert entry.actor_id == bob_viewer.pk and entry.workspace_id == workspace_a.pk
    assert entry.after == {"reason": "role", "needs": "editor", "has": "viewer"}


def test_a_token_on_another_workspaces_url_is_recorded(
    client, workspace_a, workspace_b, mallory_owner, token_for
):
    secret = token_for(workspace_b, mallory_owner)
    response = client.get("/api/w/acme/flows", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 401
    entry = _last("access.denied")
    assert entry.actor_id == mallory_owner.pk and entry.workspace_id == workspace_a.pk
    assert entry.after["reason"] == "token_other_workspace"


def test_document_create_and_delete_are_recorded(workspace_a, erin_editor):
    acting = Membership.objects.get(user=erin_editor)
    document = flow_services.document_create(
        workspace=workspace_a, acting=acting, title="FAQ", content="Refunds take 5 days."
    )
    created = _last("document.create")
    assert created.target == f"document:{document.pk}" and created.after["title"] == "FAQ"
    flow_services.document_delete(workspace=workspace_a, acting=acting, document=document)
    assert _last("document.delete").before == {"title": "FAQ", "collection": "default"}
