"""The workspace switcher: home lists a user's workspaces, the header switches between them."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import Role
from tests.conftest import add_member, make_user

pytestmark = pytest.mark.django_db


def test_home_with_one_workspace_goes_straight_there(workspace_a, alice_owner, client_for):
    response = client_for(alice_owner).get("/")
    assert response.status_code == 302 and response["Location"] == "/w/acme/"


def test_home_lists_every_workspace_of_the_user(workspace_a, workspace_b, bob_viewer, client_for):
    add_member(workspace_b, bob_viewer, Role.EDITOR)
    page = client_for(bob_viewer).get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/w/acme/"' in html and 'href="/w/bravo/"' in html


def test_header_switcher_lists_only_the_users_workspaces_with_roles(
    workspace_a, workspace_b, bob_viewer, client_for
):
    add_member(workspace_b, bob_viewer, Role.EDITOR)
    client = client_for(bob_viewer)
    page = client.get("/w/acme/").content.decode()
    switcher = page[page.index('class="switcher"') :]
    switcher = switcher[: switcher.index("</details>")]
    assert "Acme" in switcher and 'href="/w/bravo/"' in switcher
    assert "viewer" in switcher and "editor" in switcher
    # Following the switcher lands in the other workspace, with that workspace's role.
    assert client.get("/w/bravo/").status_code == 200
    assert client.get("/api/w/bravo/").json()["role"] == "editor"


def test_switcher_never_shows_other_tenants(workspace_a, workspace_b, alice_owner, client_for):
    page = client_for(alice_owner).get("/w/acme/").content.decode()
    assert "/w/bravo/" not in page and "Bravo" not in page


def test_user_without_workspace_is_told_how_to_join(db):
    user = make_user("loner@example.com")
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get("/")
    assert page.status_code == 200 and b"invitation" in page.content
