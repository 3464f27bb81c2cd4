"""Password change and reset, end to end through the test client and Django's mail outbox."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a brand new passphrase 42"


def signs_in(email: str, password: str) -> bool:
    client = Client()
    response = client.post("/accounts/login/", {"username": email, "password": password})
    return response.status_code == 302 and "_auth_user_id" in client.session


def test_password_change_needs_a_signed_in_user() -> None:
    response = Client().get("/accounts/password/change/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_password_change_replaces_the_password_and_keeps_the_session(alice_owner) -> None:
    client = Client()
    client.post("/accounts/login/", {"username": alice_owner.email, "password": PASSWORD})
    assert "_auth_user_id" in client.session
    page = client.get("/accounts/password/change/")
    assert page.status_code == 200 and b'name="old_password"' in page.content

    response = client.post(
        "/accounts/password/change/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302 and response["Location"] == "/accounts/password/change/done/"
    assert client.get("/accounts/password/change/done/").status_code == 200
    assert client.get("/").status_code in (200, 302)  # still signed in
    assert "_auth_user_id" in client.session
    assert signs_in(alice_owner.email, NEW_PASSWORD)
    assert not signs_in(alice_owner.email, PASSWORD)


def test_password_change_with_a_wrong_old_password_changes_nothing(alice_owner) -> None:
    client = Client()
    client.force_login(alice_owner, backend="django.contrib.auth.backends.ModelBackend")
    response = client.post(
        "/accounts/password/change/",
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 200 and b'class="error"' in response.content
    alice_owner.refresh_from_db()
    assert alice_owner.check_password(PASSWORD)


def test_password_reset_by_emailed_link(alice_owner) -> None:
    client = Client()
    assert client.get("/accounts/password/reset/").status_code == 200
    response = client.post("/accounts/password/reset/", {"email": "ALICE@example.com"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password/reset/done/"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [alice_owner.email]
    link = re.search(r"https?://[^/\s]+(/accounts/reset/[^/\s]+/[^/\s]+/)", mail.outbox[0].body)
    assert link, mail.outbox[0].body

    # The emailed link swaps its token for a session-held one, then shows the form.
    confirm = client.get(link.group(1), follow=True)
    assert confirm.status_code == 200 and b'name="new_password1"' in confirm.content
    form_url = confirm.redirect_chain[-1][0]
    done = client.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    assert client.get("/accounts/reset/done/").status_code == 200

    assert signs_in(alice_owner.email, NEW_PASSWORD)
    assert not signs_in(alice_owner.email, PASSWORD)
    # The link worked once: it is dead now.
    again = Client().get(link.group(1), follow=True)
    assert b'name="new_password1"' not in again.content
    assert b"invalid" in again.content


def test_password_reset_for_an_unknown_address_sends_nothing_and_says_the_same() -> None:
    make_user("someone@example.com")
    response = Client().post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password/reset/done/"
    assert mail.outbox == []
