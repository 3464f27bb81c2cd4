"""`manage.py createworkspace <slug> --owner <email>` and `manage.py issuetoken <slug> <email>`."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import ApiToken, Membership, Role, User, Workspace
from accounts.services import hash_secret

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_createworkspace_for_an_existing_user(alice_owner) -> None:
    output = run("createworkspace", "labs", "--owner", "Alice@Example.com", "--name", "Labs")
    workspace = Workspace.objects.get(slug="labs")
    assert workspace.name == "Labs" and "labs" in output
    membership = Membership.objects.get(workspace=workspace)
    assert membership.user == alice_owner and membership.role == Role.OWNER


def test_createworkspace_creates_a_passwordless_owner(db) -> None:
    output = run("createworkspace", "newco", "--owner", "founder@newco.example")
    owner = User.objects.get(email="founder@newco.example")
    assert not owner.has_usable_password() and "password reset" in output
    assert Membership.objects.get(workspace__slug="newco").user == owner
    assert Workspace.objects.get(slug="newco").name == "newco"


@pytest.mark.parametrize("slug", ["acme", "Not A Slug", "-dash"])
def test_createworkspace_refuses_taken_or_malformed_slugs(workspace_a, slug) -> None:
    with pytest.raises(CommandError):
        run("createworkspace", slug, "--owner", "someone@example.com")
    assert Workspace.objects.count() == 1


def test_issuetoken_prints_a_token_that_opens_the_api(workspace_a, erin_editor) -> None:
    secret = run("issuetoken", "acme", erin_editor.email).strip()
    token = ApiToken.objects.get()
    assert token.token_hash == hash_secret(secret) and token.user == erin_editor
    response = Client().get("/api/w/acme/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200
    assert response.json() == {"slug": "acme", "name": "Acme", "role": "editor"}
    members = Client().get("/api/w/acme/members", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert members.status_code == 200 and erin_editor.email in members.content.decode()


def test_issuetoken_refuses_non_members_and_unknown_names(
    workspace_a, workspace_b, mallory_owner
) -> None:
    for args in (
        ("acme", mallory_owner.email),  # a user, but not a member of acme
        ("nowhere", mallory_owner.email),
        ("acme", "ghost@example.com"),
    ):
        with pytest.raises(CommandError):
            run("issuetoken", *args)
    assert not ApiToken.objects.exists()


def test_a_passwordless_owner_sets_a_first_password_by_reset(db) -> None:
    """What createworkspace tells a new owner to do works: reset mail, new password, sign-in."""
    run("createworkspace", "newco", "--owner", "founder@newco.example")
    client = Client()
    client.post("/accounts/password/reset/", {"email": "founder@newco.example"})
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/\s]+(/accounts/reset/\S+/\S+/)", mail.outbox[0].body)
    assert link, mail.outbox[0].body
    form = client.get(link.group(1), follow=True)
    password = "first password for newco"
    done = client.post(
        form.redirect_chain[-1][0], {"new_password1": password, "new_password2": password}
    )
    assert done.status_code == 302
    signed_in = Client()
    signed_in.post("/accounts/login/", {"username": "founder@newco.example", "password": password})
    assert signed_in.get("/", follow=True).request["PATH_INFO"] == "/w/newco/"


@pytest.mark.parametrize(
    ("embedded", "flag", "seeds"),
    [(True, False, True), (False, False, False), (False, True, True)],
    ids=["embedded-default", "configured-database", "configured-with---demo"],
)
def test_serve_prepare_seeds_the_public_demo_login_only_where_asked(
    db, settings, monkeypatch, embedded, flag, seeds
):
    from io import StringIO

    from ops.management.commands import serve

    ran: list[str] = []
    monkeypatch.setattr(serve, "call_command", lambda name, **kw: ran.append(name))
    settings.EMBEDDED = embedded
    command = serve.Command(stdout=StringIO())
    command._prepare(demo=flag)
    assert ran[:2] == ["migrate", "collectstatic"]
    assert ("seed_demo" in ran) is seeds
    if not seeds:
        assert "No demo login" in command.stdout._out.getvalue()
