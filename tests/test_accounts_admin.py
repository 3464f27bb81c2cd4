"""Django admin for platform staff: users, workspaces, memberships, invitations, tokens.

Staff see and manage them; nobody else gets in; no page ever shows a token or invitation
hash (nor a full password hash).
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import ApiToken, Invitation, Membership, User
from accounts.services import api_token_create, invitation_create
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def secrets_in_db(workspace_a, alice_owner, carol_admin) -> dict[str, str]:
    """A live token and invitation, returning every secret that must never be shown."""
    issued = api_token_create(workspace=workspace_a, user=alice_owner, name="deploy bot")
    owner = Membership.objects.get(user=alice_owner)
    invitation = invitation_create(
        workspace=workspace_a,
        acting=owner,
        email="pending@example.com",
        role="viewer",
        base_url="http://testserver",
    )
    return {
        "token secret": issued.secret,
        "token hash": issued.token.token_hash,
        "invitation token": invitation.token,
        "invitation hash": Invitation.objects.get(pk=invitation.invitation.pk).token_hash,
        "password hash": User.objects.get(pk=alice_owner.pk).password,
    }


def admin_pages(workspace_a, alice_owner) -> list[str]:
    token = ApiToken.objects.get()
    invitation = Invitation.objects.get()
    membership = Membership.objects.get(user=alice_owner)
    return [
        "/admin/",
        reverse("admin:accounts_user_changelist"),
        reverse("admin:accounts_user_change", args=[alice_owner.pk]),
        reverse("admin:accounts_workspace_changelist"),
        reverse("admin:accounts_workspace_change", args=[workspace_a.pk]),
        reverse("admin:accounts_membership_changelist"),
        reverse("admin:accounts_membership_change", args=[membership.pk]),
        reverse("admin:accounts_invitation_changelist"),
        reverse("admin:accounts_invitation_change", args=[invitation.pk]),
        reverse("admin:accounts_apitoken_changelist"),
        reverse("admin:accounts_apitoken_change", args=[token.pk]),
        reverse("admin:accounts_apitoken_changelist") + f"?q={token.prefix}",
    ]


def test_staff_see_every_accounts_page_and_never_a_hash(
    staff_client, secrets_in_db, workspace_a, alice_owner
) -> None:
    for url in admin_pages(workspace_a, alice_owner):
        response = staff_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        for what, secret in secrets_in_db.items():
            assert secret not in html, f"{url} shows the {what}"
        assert "token_hash" not in html, url
    tokens = staff_client.get(reverse("admin:accounts_apitoken_changelist")).content.decode()
    assert "deploy bot" in tokens and ApiToken.objects.get().prefix in tokens


def test_tokens_cannot_be_minted_in_the_admin_only_revoked(
    staff_client, secrets_in_db, workspace_a
) -> None:
    assert staff_client.get(reverse("admin:accounts_apitoken_add")).status_code == 403
    token = ApiToken.objects.get()
    response = staff_client.post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {secrets_in_db['token secret']}"}
    assert Client().get("/api/w/acme/", **bearer).status_code == 401


def test_staff_manage_memberships(staff_client, workspace_a, bob_viewer) -> None:
    membership = Membership.objects.get(user=bob_viewer)
    response = staff_client.post(
        reverse("admin:accounts_membership_change", args=[membership.pk]),
        {"user": bob_viewer.pk, "workspace": workspace_a.pk, "role": "editor"},
    )
    assert response.status_code == 302, response.content[:500]
    membership.refresh_from_db()
    assert membership.role == "editor"


def test_anonymous_and_non_staff_are_kept_out(workspace_a, alice_owner, client_for) -> None:
    login = reverse("admin:login")
    for client in (Client(), client_for(alice_owner)):  # alice owns a workspace, not the platform
        for url in ("/admin/", reverse("admin:accounts_apitoken_changelist")):
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(f"{login}?next="), url
    # Signing in to the admin with a member's good credentials does not open it either.
    client = Client()
    page = client.post(
        login, {"username": alice_owner.email, "password": PASSWORD, "next": "/admin/"}
    )
    assert page.status_code == 200 and b"staff account" in page.content
    assert client.get("/admin/").status_code == 302


def test_staff_without_permissions_see_no_accounts_data(workspace_a, client_for) -> None:
    clerk = User.objects.create_user("clerk@flowdeck.example", PASSWORD, is_staff=True)
    client = client_for(clerk)
    assert client.get("/admin/").status_code == 200
    assert client.get(reverse("admin:accounts_apitoken_changelist")).status_code == 403
    assert client.get(reverse("admin:accounts_user_changelist")).status_code == 403
