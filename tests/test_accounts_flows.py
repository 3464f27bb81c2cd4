"""Invitation, API token and login-throttle flows end to end through the test client."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken, Invitation, Membership, Role, User
from accounts.services import hash_secret
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def _invite(client: Client, slug: str, email: str, role: str = "editor") -> str:
    response = client.post(
        f"/w/{slug}/members/", {"action": "invite", "email": email, "role": role}, follow=True
    )
    assert response.status_code == 200
    page = response.content.decode()
    match = re.search(r"/invite/([A-Za-z0-9_\-]+)/", page)
    assert match, "the invitation link is shown to the inviting admin"
    return match.group(1)


def test_invitation_creates_account_and_membership(workspace_a, carol_admin, client_for):
    token = _invite(client_for(carol_admin), "acme", "newbie@example.com", "viewer")
    assert mail.outbox and f"/invite/{token}/" in mail.outbox[0].body
    assert Invitation.objects.get().token_hash == hash_secret(token)  # never the raw token

    visitor = Client()
    page = visitor.get(f"/invite/{token}/")
    assert page.status_code == 200 and b"newbie@example.com" in page.content
    response = visitor.post(
        f"/invite/{token}/",
        {"name": "Newbie", "new_password1": PASSWORD, "new_password2": PASSWORD},
    )
    assert response.status_code == 302 and response["Location"] == "/w/acme/"
    membership = Membership.objects.get(user__email="newbie@example.com")
    assert membership.role == Role.VIEWER and membership.workspace == workspace_a
    assert visitor.get("/w/acme/").status_code == 200

    # A used link is dead.
    assert Client().get(f"/invite/{token}/").status_code == 404


def test_expired_invitation_is_refused(workspace_a, carol_admin, client_for):
    token = _invite(client_for(carol_admin), "acme", "late@example.com")
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = Client().post(
        f"/invite/{token}/", {"new_password1": PASSWORD, "new_password2": PASSWORD}
    )
    assert response.status_code == 404
    assert not User.objects.filter(email="late@example.com").exists()


def test_existing_user_accepts_when_signed_in_as_the_invitee(
    workspace_a, workspace_b, carol_admin, mallory_owner, client_for
):
    token = _invite(client_for(carol_admin), "acme", mallory_owner.email)
    # Signed in as someone else: refused, nothing changes.
    wrong = client_for(carol_admin).post(f"/invite/{token}/")
    assert wrong.status_code == 302
    assert not Membership.objects.filter(user=mallory_owner, workspace=workspace_a).exists()
    right = client_for(mallory_owner).post(f"/invite/{token}/")
    assert right.status_code == 302 and right["Location"] == "/w/acme/"
    assert Membership.objects.get(user=mallory_owner, workspace=workspace_a).role == "editor"


def test_editor_cannot_invite(workspace_a, erin_editor, client_for):
    response = client_for(erin_editor).post(
        "/w/acme/members/", {"action": "invite", "email": "x@example.com", "role": "owner"}
    )
    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_last_owner_cannot_be_removed_or_demoted(workspace_a, alice_owner, client_for):
    owner_membership = Membership.objects.get(user=alice_owner)
    client = client_for(alice_owner)
    client.post("/w/acme/members/", {"action": "remove", "membership": owner_membership.pk})
    client.post(
        "/w/acme/members/",
        {"action": "role", "membership": owner_membership.pk, "role": "viewer"},
    )
    assert Membership.objects.get(pk=owner_membership.pk).role == Role.OWNER


def test_admin_changes_role_and_removes_member(workspace_a, carol_admin, bob_viewer, client_for):
    bob = Membership.objects.get(user=bob_viewer)
    client = client_for(carol_admin)
    client.post("/w/acme/members/", {"action": "role", "membership": bob.pk, "role": "editor"})
    assert Membership.objects.get(pk=bob.pk).role == Role.EDITOR
    client.post("/w/acme/members/", {"action": "remove", "membership": bob.pk})
    assert not Membership.objects.filter(pk=bob.pk).exists()
    assert client_for(bob_viewer).get("/w/acme/").status_code == 404


def test_api_token_shown_once_hashed_revocable_and_tracks_last_use(
    workspace_a, erin_editor, client_for
):
    client = client_for(erin_editor)
    page = client.post("/w/acme/tokens/", {"name": "ci"}).content.decode()
    secret = re.search(r'id="new-token">(fdk_[^<]+)<', page).group(1)
    token = ApiToken.objects.get()
    assert token.token_hash == hash_secret(secret) and secret not in str(token.__dict__)
    assert secret not in client.get("/w/acme/tokens/").content.decode()

    api = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    assert api.get("/api/w/acme/", **auth).json()["role"] == "editor"
    token.refresh_from_db()
    assert token.last_used_at is not None

    client.post("/w/acme/tokens/", {"action": "revoke", "token": token.pk})
    assert api.get("/api/w/acme/", **auth).status_code == 401


def test_token_only_opens_its_own_workspace(workspace_a, workspace_b, mallory_owner, token_for):
    secret = token_for(workspace_b, mallory_owner)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    assert Client().get("/api/w/bravo/", **auth).status_code == 200
    assert Client().get("/api/w/acme/", **auth).status_code == 401


def test_login_is_throttled_after_repeated_failures(db, settings):
    make_user("victim@example.com")
    client = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(
            "/accounts/login/", {"username": "victim@example.com", "password": "wrong"}
        )
        assert response.status_code in (200, 429)
    locked = client.post(
        "/accounts/login/", {"username": "victim@example.com", "password": PASSWORD}
    )
    assert locked.status_code == 429
    assert b"Too many failed sign-ins" in locked.content
    assert "_auth_user_id" not in client.session
    # Another address is not locked out by the attacker's failures.
    other = Client(REMOTE_ADDR="198.51.100.7")
    ok = other.post("/accounts/login/", {"username": "victim@example.com", "password": PASSWORD})
    assert ok.status_code == 302


@pytest.mark.parametrize("login_url", ["/accounts/login/", "/admin/login/"])
def test_the_lock_out_counts_every_spelling_of_an_address_as_one(db, settings, login_url):
    make_user("victim@example.com", is_staff=True)
    client = Client(REMOTE_ADDR="203.0.113.10")
    spellings = [
        "victim@example.com",
        "VICTIM@example.com",
        " victim@example.com ",
        "Victim@Example.COM",
        "\tvictim@EXAMPLE.com",
    ]
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        client.post(
            login_url, {"username": spellings[attempt % len(spellings)], "password": "wrong"}
        )
    for spelling in [*spellings, "ＶＩＣＴＩＭ@example.com"]:  # full-width letters: NFKC
        locked = client.post(login_url, {"username": spelling, "password": PASSWORD})
        assert locked.status_code == 429, spelling
    assert "_auth_user_id" not in client.session
    # A forged X-Forwarded-For does not give the attacker a fresh address either.
    spoofed = client.post(
        login_url,
        {"username": "victim@example.com", "password": PASSWORD},
        HTTP_X_FORWARDED_FOR="198.51.100.99",
    )
    assert spoofed.status_code == 429


def test_login_with_email_and_password(workspace_a, alice_owner):
    client = Client()
    response = client.post(
        "/accounts/login/", {"username": "ALICE@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert client.get("/", follow=True).request["PATH_INFO"] == "/w/acme/"
