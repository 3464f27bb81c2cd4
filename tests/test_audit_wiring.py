"""Each audited change writes its entry, with who, what, before and after — never a secret."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.db import transaction
from django.http import Http404
from django.urls import reverse

from accounts import services as accounts_services
from accounts.models import Invitation, Membership, Role
from accounts.tenancy import get_scoped, resolve_membership
from audit import context
from audit.models import AuditEntry
from audit.services import write_pending_denials
from flows import services as flow_services
from flows.models import Flow
from runs import services as run_services
from runs.models import Run, RunStatus
from tests.conftest import PASSWORD
from tests.test_tenancy_matrix import DEMO_GRAPH


def _acting(workspace, user) -> Membership:
    return Membership.objects.get(workspace=workspace, user=user)


def _last(action: str) -> AuditEntry:
    entry = AuditEntry.objects.filter(action=action).order_by("-seq").first()
    assert entry is not None, f"no {action} entry"
    return entry


# --- sign-in --------------------------------------------------------------------------------
def test_login_through_the_login_page_is_recorded_with_ip_and_user_agent(client, alice_owner):
    response = client.post(
        reverse("login"),
        {"username": "alice@example.com", "password": PASSWORD},
        HTTP_USER_AGENT="AuditTest/1.0",
    )
    assert response.status_code == 302
    entry = _last("auth.login")
    assert entry.actor_id == alice_owner.pk and entry.actor_label == "alice@example.com"
    assert entry.workspace_id is None
    assert entry.ip == "127.0.0.1" and entry.user_agent == "AuditTest/1.0"


def test_failed_login_is_recorded_without_the_password(client, alice_owner):
    response = client.post(
        reverse("login"), {"username": "alice@example.com", "password": "wrong-hunter2"}
    )
    assert response.status_code == 200
    entry = _last("auth.login_failed")
    assert entry.target == f"user:{alice_owner.pk}" and entry.actor_id is None
    assert entry.after == {"username": "alice@example.com", "known_user": True}
    assert "hunter2" not in json.dumps([entry.before, entry.after, entry.target])


def test_failed_login_for_an_unknown_email_is_a_platform_entry(client, db):
    client.post(reverse("login"), {"username": "nobody@example.com", "password": "x"})
    entry = _last("auth.login_failed")
    assert entry.workspace_id is None and entry.actor_id is None
    assert entry.target == "email:nobody@example.com"
    assert entry.after["known_user"] is False


# --- members, invitations, tokens -------------------------------------------------------------
def test_invitation_create_accept_and_revoke_are_recorded(workspace_a, alice_owner):
    acting = _acting(workspace_a, alice_owner)
    issued = accounts_services.invitation_create(
        workspace=workspace_a, acting=acting, email="Dave@Example.com", role=Role.EDITOR
    )
    invite = _last("member.invite")
    assert invite.workspace_id == workspace_a.pk and invite.actor_id == alice_owner.pk
    assert invite.target == f"invitation:{issued.invitation.pk}"
    assert invite.after == {"email": "dave@example.com", "role": "editor"}
    assert issued.token not in json.dumps(invite.after)

    from tests.conftest import make_user

    dave = make_user("dave@example.com")
    membership = accounts_services.invitation_accept(token=issued.token, user=dave)
    join = _last("member.join")
    assert join.actor_id == dave.pk and join.target == f"membership:{membership.pk}"
    assert join.after["role"] == "editor"

    other = accounts_services.invitation_create(
        workspace=workspace_a, acting=acting, email="eve@example.com", role=Role.VIEWER
    )
    accounts_services.invitation_revoke(
        workspace=workspace_a, acting=acting, invitation_id=other.invitation.pk
    )
    revoke = _last("member.invite_revoke")
    assert revoke.target == f"invitation:{other.invitation.pk}"
    assert Invitation.objects.get(pk=other.invitation.pk).revoked_at is not None


def test_role_change_and_removal_are_recorded_with_before_and_after(
    workspace_a, alice_owner, bob_viewer
):
    acting = _acting(workspace_a, alice_owner)
    bob = _acting(workspace_a, bob_viewer)
    accounts_services.membership_change_role(
        workspace=workspace_a, acting=acting, membership_id=bob.pk, role=Role.EDITOR
    )
    change = _last("member.role_change")
    assert change.target == f"membership:{bob.pk}"
    assert change.before == {"role": "viewer", "email": "bob@example.com"}
    assert change.after == {"role": "editor"}

    accounts_services.membership_remove(workspace=workspace_a, acting=acting, membership_id=bob.pk)
    removal = _last("member.remove")
    assert removal.before == {"role": "editor", "email": "bob@example.com"}


def test_refused_role_change_writes_nothing(workspace_a, carol_admin, alice_owner):
    from django.core.exceptions import ValidationError

    before = AuditEntry.objects.count()
    with pytest.raises(ValidationError):
        accounts_services.membership_change_role(
            workspace=workspace_a,
            acting=_acting(workspace_a, carol_admin),
            membership_id=_acting(workspace_a, alice_owner).pk,
            role=Role.VIEWER,
        )
    assert AuditEntry.objects.count() == before


def test_token_create_and_revoke_are_recorded_without_the_secret(workspace_a, alice_owner):
    issued = accounts_services.api_token_create(workspace=workspace_a, user=alice_owner, name="ci")
    created = _last("token.create")
    assert created.target == f"token:{issued.token.pk}" and created.actor_id == alice_owner.pk
    assert created.after == {"name": "ci", "prefix": issued.token.prefix}
    accounts_services.api_token_revoke(
        workspace=workspace_a, acting=_acting(workspace_a, alice_owner), token_id=issued.token.pk
    )
    revoked = _last("token.revoke")
    assert revoked.target == f"token:{issued.token.pk}"
    everything = json.dumps(list(AuditEntry.objects.values("before", "after", "target")))
    assert issued.secret not in everything


# --- credentials and the whitelist ------------------------------------------------------------
def test_credential_entries_never_hold_the_api_key(workspace_a, alice_owner):
    acting = _acting(workspace_a, alice_owner)
    credential = flow_services.credential_create(
        workspace=workspace_a,
        acting=acting,
        name="openai",
        provider="openai",
        base_url="https://llm.example.com/v1",
        api_key="sk-very-secret-123",
    )
    created = _last("credential.create")
    assert created.target == f"credential:{credential.pk}"
    assert created.after == {
        "name": "openai",
        "provider": "openai",
        "base_url": "https://llm.example.com/v1",
        "has_api_key": True,
    }
    flow_services.credential_update(
        workspace=workspace_a, acting=acting, credential=credential, api_key="sk-rotated-456"
    )
    updated = _last("credential.update")
    assert updated.before["has_api_key"] is True and updated.after["api_key_changed"] is True
    flow_services.credential_update(
        workspace=workspace_a, acting=acting, credential=credential, name="renamed"
    )
    renamed = _last("credential.update")
    assert renamed.before["name"] == "openai" and renamed.after["name"] == "renamed"
    assert renamed.after["api_key_changed"] is False
    flow_services.credential_delete(workspace=workspace_a, acting=acting, credential=credential)
    assert _last("credential.delete").before["name"] == "renamed"

    rows = AuditEntry.objects.values_list("before", "after", "target")
    dumped = json.dumps(list(rows))
    for secret in ("sk-very-secret-123", "sk-rotated-456", credential.api_key_encrypted):
        assert secret not in dumped


def test_whitelist_changes_are_recorded(workspace_a, alice_owner, django_user_model):
    flow_services.workspace_policy_set(
        workspace=workspace_a, acting=_acting(workspace_a, alice_owner), changes={"llm.demo": False}
    )
    change = _last("whitelist.workspace_change")
    assert change.workspace_id == workspace_a.pk and change.target == "component:llm.demo"
    assert (change.before, change.after) == ({"enabled": True}, {"enabled": False})

    staff = django_user_model.objects.create_user("staff@example.com", "x", is_staff=True)
    flow_services.platform_policy_set(key="llm.demo", enabled=False, acting=staff)
    platform = _last("whitelist.platform_change")
    assert platform.workspace_id is None and platform.actor_id == staff.pk
    assert platform.after == {"enabled": False}


# --- flows and runs ---------------------------------------------------------------------------
def test_flow_create_version_save_rename_and_delete_are_recorded(workspace_a, erin_editor):
    acting = _acting(workspace_a, erin_editor)
    flow = flow_services.flow_create(
        workspace=workspace_a, acting=acting, name="Support bot", graph=DEMO_GRAPH
    )
    assert _last("flow.create").after == {"name": "Support bot"}
    version = _last("flow.version_save")
    assert version.target == f"flow:{flow.pk}" and version.after["version"] == 1
    assert version.actor_id == erin_editor.pk
    flow_services.flow_version_create(flow=flow, graph=DEMO_GRAPH, acting=erin_editor)
    assert _last("flow.version_save").after["version"] == 2
    flow_services.flow_rename(workspace=workspace_a, acting=acting, flow=flow, name="Helpdesk")
    rename = _last("flow.rename")
    assert (rename.before, rename.after) == ({"name": "Support bot"}, {"name": "Helpdesk"})
    flow_services.flow_duplicate(workspace=workspace_a, acting=acting, flow=flow)
    assert _last("flow.create").after["duplicate_of"] == flow.pk
    flow_services.flow_delete(workspace=workspace_a, acting=acting, flow=flow)
    assert _last("flow.delete").target == f"flow:{flow.pk}"


def test_run_start_rerun_and_cancel_are_recorded(workspace_a, erin_editor):
    acting = _acting(workspace_a, erin_editor)
    flow = flow_services.flow_create(
        workspace=workspace_a, acting=acting, name="f", graph=DEMO_GRAPH
    )
    run = run_services.run_start(
        workspace=workspace_a, acting=acting, session_id="s1", flow=flow, inputs={"input": "hi"}
    )
    start = _last("run.start")
    assert start.target == f"run:{run.pk}" and start.workspace_id == workspace_a.pk
    assert start.after["version"] == 1 and start.after["rerun_of"] is None
    assert "hi" not in json.dumps(start.after)  # inputs stay in the run, not the trail

    run_services.run_cancel(workspace=workspace_a, acting=acting, run=run)
    cancel = _last("run.cancel")
    assert cancel.target == f"run:{run.pk}" and cancel.before == {"status": "queued"}
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED

    again = run_services.run_rerun(workspace=workspace_a, acting=acting, run=run, session_id="s2")
    rerun = _last("run.rerun")
    assert rerun.target == f"run:{again.pk}" and rerun.after["rerun_of"] == str(run.pk)


# --- failed authorisation ----------------------------------------------------------------------
def test_non_member_hitting_a_workspace_url_is_recorded_and_still_404(
    client_for, workspace_a, workspace_b, alice_owner
):
    response = client_for(alice_owner).get(f"/w/{workspace_b.slug}/flows/")
    assert response.status_code == 404
    entry = _last("access.denied")
    assert entry.workspace_id == workspace_b.pk and entry.actor_id == alice_owner.pk
    assert entry.target == "workspace:bravo"

    response = client_for(alice_owner).get("/w/no-such-workspace/")
    assert response.status_code == 404
    entry = _last("access.denied")
    assert entry.workspace_id is None and entry.target == "workspace:no-such-workspace"


def test_member_probing_another_workspaces_ids_is_recorded(
    client_for, token_for, workspace_a, workspace_b, alice_owner, mallory_owner
):
    foreign = flow_services.flow_create(
        workspace=workspace_b, acting=_acting(workspace_b, mallory_owner), name="b"
    )
    response = client_for(alice_owner).get(f"/w/acme/flows/{foreign.pk}/")
    assert response.status_code == 404
    entry = _last("access.denied")
    assert entry.workspace_id == workspace_a.pk and entry.target == f"flow:{foreign.pk}"
    assert entry.after == {"reason": "other_workspace"}

    token = token_for(workspace_a, alice_owner)
    response = client_for(None).get(
        f"/api/w/acme/flows/{foreign.pk}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 404
    entry = _last("access.denied")
    assert entry.actor_id == alice_owner.pk and entry.target == f"flow:{foreign.pk}"

    response = client_for(alice_owner).get("/w/acme/runs/not-a-uuid/")
    assert response.status_code == 404
    assert _last("access.denied").after == {"reason": "invalid"}


def test_anonymous_404s_are_not_recorded(client, workspace_a):
    before = AuditEntry.objects.count()
    assert client.get("/api/w/acme/flows/1").status_code == 401
    assert AuditEntry.objects.count() == before


def test_a_denial_inside_a_rolled_back_transaction_is_still_written(
    workspace_a, workspace_b, alice_owner, mallory_owner
):
    foreign = Flow.objects.create(workspace=workspace_b, name="b", created_by=mallory_owner)
    ctx = context.AuditContext(ip="192.0.2.7", get_user=lambda: alice_owner, deferred=True)
    with context.bound(ctx), pytest.raises(Http404), transaction.atomic():
        get_scoped(Flow, workspace_a, pk=foreign.pk)
    assert not AuditEntry.objects.filter(action="access.denied").exists()
    write_pending_denials(ctx)  # what the middleware does once the response is ready
    entry = _last("access.denied")
    assert entry.target == f"flow:{foreign.pk}" and entry.ip == "192.0.2.7"


def test_resolve_membership_outside_a_request_records_at_once(workspace_b, alice_owner):
    with pytest.raises(Http404):
        resolve_membership(alice_owner, workspace_b.slug)
    assert _last("access.denied").workspace_id == workspace_b.pk


def test_websocket_scope_gives_ip_and_user_agent(workspace_a, alice_owner):
    scope = {
        "type": "websocket",
        "client": ("203.0.113.9", 5555),
        "headers": [(b"user-agent", b"WsClient/2"), (b"host", b"localhost")],
        "user": alice_owner,
    }
    ctx = context.from_scope(scope)
    with context.bound(ctx), transaction.atomic():
        from audit.services import record

        entry = record(action="run.watch", workspace=workspace_a, actor=alice_owner, target="run:x")
    assert (entry.ip, entry.user_agent) == ("203.0.113.9", "WsClient/2")


# --- all of it together ----------------------------------------------------------------------
def test_the_chain_verifies_after_a_realistic_day(
    client, client_for, workspace_a, workspace_b, alice_owner, erin_editor, bob_viewer
):
    client.post(reverse("login"), {"username": "alice@example.com", "password": PASSWORD})
    client.post(reverse("login"), {"username": "alice@example.com", "password": "nope"})
    owner = client_for(alice_owner)
    owner.post("/w/acme/members/", {"action": "invite", "email": "x@example.com", "role": "viewer"})
    editor = client_for(erin_editor)
    created = editor.post(
        "/api/w/acme/flows",
        {"name": "api flow", "graph": DEMO_GRAPH},
        content_type="application/json",
    )
    assert created.status_code in (200, 201), created.content
    flow_id = created.json()["id"]
    ran = editor.post(
        f"/api/w/acme/flows/{flow_id}/runs",
        {"inputs": {"input": "hi"}},
        content_type="application/json",
    )
    assert ran.status_code == 202, ran.content
    editor.post(f"/api/w/acme/runs/{ran.json()['run_id']}/cancel")
    client_for(bob_viewer).get("/w/bravo/")  # probing
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {
        "auth.login",
        "auth.login_failed",
        "member.invite",
        "flow.create",
        "flow.version_save",
        "run.start",
        "run.cancel",
        "access.denied",
    } <= actions
    call_command("verify_audit")


def test_a_probe_that_fails_inside_a_service_transaction_is_recorded_after_the_response(
    client_for, token_for, workspace_a, workspace_b, alice_owner, mallory_owner
):
    """api_token_revoke looks the token up inside its transaction, which the 404 rolls back:
    the middleware writes the denial once the response is ready."""
    foreign_token = accounts_services.api_token_create(
        workspace=workspace_b, user=mallory_owner, name="b"
    ).token
    response = client_for(alice_owner).post(
        "/w/acme/tokens/", {"action": "revoke", "token": foreign_token.pk}
    )
    assert response.status_code == 404
    entry = _last("access.denied")
    assert entry.workspace_id == workspace_a.pk and entry.actor_id == alice_owner.pk
    assert entry.target == f"token:{foreign_token.pk}"
    assert entry.after == {"reason": "other_workspace"} and entry.ip == "127.0.0.1"
    foreign_token.refresh_from_db()
    assert foreign_token.revoked_at is None
    call_command("verify_audit")
