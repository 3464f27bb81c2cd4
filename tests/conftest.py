"""Shared fixtures: named workspaces and members, real-service checks, API clients."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import Membership, Role, User, Workspace
from accounts.services import api_token_create, workspace_create

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PASSWORD = "correct horse battery staple"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def require_services(*, postgres: bool = False, redis: bool = True) -> None:
    """Skip (outside CI) or fail (under CI) when the real services are not configured/up."""
    problems = []
    if redis and not (settings.REDIS_URL and _reachable(settings.REDIS_URL, 6379)):
        problems.append("Redis (set REDIS_URL to a running server)")
    if postgres and settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        problems.append("PostgreSQL (set DATABASE_URL)")
    if problems:
        message = "needs " + " and ".join(problems)
        if IN_CI:
            pytest.fail(message + " — CI must run against the real services")
        pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def _ci_services_present() -> None:
    """Under CI the suite runs against PostgreSQL and Redis: fail loudly if either is absent."""
    if IN_CI:
        assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql", (
            "CI must run on PostgreSQL: DATABASE_URL is not set to it"
        )
        assert settings.REDIS_URL and _reachable(settings.REDIS_URL, 6379), (
            f"CI must run with Redis reachable at REDIS_URL ({settings.REDIS_URL!r})"
        )


def make_user(email: str, *, name: str = "", is_staff: bool = False) -> User:
    return User.objects.create_user(email, PASSWORD, name=name, is_staff=is_staff)


def add_member(workspace: Workspace, user: User, role: str) -> Membership:
    return Membership.objects.create(workspace=workspace, user=user, role=role)


@pytest.fixture
def staff() -> User:
    return User.objects.create_superuser("ops@flowdeck.example", PASSWORD, name="Ops")


@pytest.fixture
def staff_client(staff: User) -> Client:
    client = Client()
    client.force_login(staff, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def alice_owner(db: None) -> User:
    return make_user("alice@example.com", name="Alice")


@pytest.fixture
def workspace_a(alice_owner: User) -> Workspace:
    return workspace_create(name="Acme", slug="acme", owner=alice_owner)


@pytest.fixture
def carol_admin(workspace_a: Workspace) -> User:
    user = make_user("carol@example.com", name="Carol")
    add_member(workspace_a, user, Role.ADMIN)
    return user


@pytest.fixture
def erin_editor(workspace_a: Workspace) -> User:
    user = make_user("erin@example.com", name="Erin")
    add_member(workspace_a, user, Role.EDITOR)
    return user


@pytest.fixture
def bob_viewer(workspace_a: Workspace) -> User:
    user = make_user("bob@example.com", name="Bob")
    add_member(workspace_a, user, Role.VIEWER)
    return user


@pytest.fixture
def mallory_owner(db: None) -> User:
    """Owner of another workspace: must never see anything of workspace_a."""
    return make_user("mallory@example.com", name="Mallory")


@pytest.fixture
def workspace_b(mallory_owner: User) -> Workspace:
    return workspace_create(name="Bravo", slug="bravo", owner=mallory_owner)


@pytest.fixture
def members(
    alice_owner: User, carol_admin: User, erin_editor: User, bob_viewer: User
) -> dict[str, User]:
    return {"owner": alice_owner, "admin": carol_admin, "editor": erin_editor, "viewer": bob_viewer}


@pytest.fixture
def client_for() -> Callable[[User | None], Client]:
    """A test client signed in as `user` (anonymous for None), with CSRF checks enforced."""

    def make(user: User | None) -> Client:
        client = Client(enforce_csrf_checks=False)
        if user is not None:
            client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        return client

    return make


@pytest.fixture
def token_for() -> Callable[[Workspace, User], str]:
    def make(workspace: Workspace, user: User) -> str:
        return api_token_create(workspace=workspace, user=user, name="test").secret

    return make


from tests.live import live_stack, private_stack  # noqa: E402,F401  (real Daphne + Celery)


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test(request: pytest.FixtureRequest) -> Any:
    """End the runs a test started before its database is flushed.

    A live worker of the session executes any run a transactional test queues, also in
    tests that do not watch it; a run still writing while pytest-django truncates the
    tables can deadlock with the TRUNCATE. Queued runs are cancelled, running ones are
    asked to stop and awaited (only those a worker holds: a live lease).
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction")
    )
    if not transactional:
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up before us, so flushed after us
    yield
    import time

    from django.db import transaction
    from django.utils import timezone

    from runs import services
    from runs.models import Run, RunStatus

    for run_id in Run.objects.filter(status=RunStatus.QUEUED).values_list("pk", flat=True):
        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=run_id)
            if run.status == RunStatus.QUEUED:
                services._end_run(run, RunStatus.CANCELLED, "The test ended.")
    held = Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__gt=timezone.now())
    held.update(cancel_requested=True)
    deadline = time.monotonic() + 20
    while held.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
