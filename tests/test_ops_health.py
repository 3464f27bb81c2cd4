"""/healthz, /readyz and `python -m ops.worker_health`: what a load balancer and an
orchestrator poll. Alive needs nothing; ready names the failing part; both are answered
before sessions, CSRF, host checks and redirects, cost one query at most and log nothing
while all is well."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import httpx
import pytest
from django.db.migrations.recorder import MigrationRecorder
from django.test import AsyncClient, Client

from ops import health
from tests.conftest import require_services
from tests.live import LOG_DIR, ROOT, LiveStack, PrivateRedis, free_port, subprocess_env

CHECKS = ["database", "migrations", "cache", "channel_layer", "broker"]


@pytest.fixture(autouse=True)
def _fresh_health_state():
    """Each test sees a process that has not checked yet (the answers are per process)."""
    health.migrations_check.forget()
    health._last = None
    health._last_failing = []
    yield
    health.migrations_check.forget()
    health._last = None
    health._last_failing = []


def body(response) -> dict:
    return json.loads(response.content)


@pytest.mark.django_db
def test_healthz_answers_without_touching_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    assert response.status_code == 200
    assert body(response) == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    assert not response.cookies  # no session, no CSRF cookie


@pytest.mark.django_db
def test_probes_by_address_over_plain_http_are_answered_not_refused_or_redirected(settings):
    # A probe comes by the pod's address (not in ALLOWED_HOSTS) and over plain HTTP behind
    # the proxy (HTTPS redirect on): both would be a 400 or a 301 for any other path.
    settings.SECURE_SSL_REDIRECT = True
    client = Client(HTTP_HOST="10.1.2.3:8000")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/accounts/login/").status_code == 400  # the rest still checks


@pytest.mark.django_db
def test_readyz_reports_every_part_ok_with_one_query(django_assert_num_queries):
    require_services(redis=True)
    client = Client()
    with django_assert_num_queries(1):  # the applied-migrations query (its answer is due)
        response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert body(response) == {"status": "ok", "checks": dict.fromkeys(CHECKS, "ok")}
    with django_assert_num_queries(1):  # SELECT 1 while the migrations answer is fresh
        assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_is_not_rate_limited_nor_behind_a_login():
    require_services(redis=True)
    client = Client(enforce_csrf_checks=True)
    statuses = {client.get("/readyz").status_code for _ in range(100)}
    assert statuses == {200}
    # Other methods are refused as such, not by CSRF (403) or a login redirect (302).
    assert client.post("/readyz").status_code == 405
    assert client.post("/healthz")["Allow"] == "GET, HEAD"


@pytest.mark.django_db
def test_an_unapplied_migration_makes_readyz_fail_naming_migrations():
    require_services(redis=True)
    latest = MigrationRecorder.Migration.objects.filter(app="runs").order_by("-applied").first()
    assert latest is not None
    latest.delete()  # the database is behind the code (rolled back with the test)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert body(response)["failing"] == ["migrations"]
    assert body(response)["checks"]["migrations"] == "1 unapplied"
    assert body(response)["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_the_migration_answer_is_reused_for_a_few_seconds(django_assert_num_queries):
    require_services(redis=True)
    client = Client()
    assert client.get("/readyz").status_code == 200
    MigrationRecorder.Migration.objects.filter(app="runs").order_by("-applied").first().delete()
    assert client.get("/readyz").status_code == 200  # still the cached answer
    health.migrations_check.forget()  # what MIGRATION_CHECK_SECONDS passing does
    assert client.get("/readyz").status_code == 503


@pytest.mark.django_db
def test_probes_log_nothing_while_ready_and_once_per_change_when_not(caplog):
    require_services(redis=True)
    client = Client()
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []

    MigrationRecorder.Migration.objects.filter(app="runs").order_by("-applied").first().delete()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            health.migrations_check.forget()
            assert client.get("/readyz").status_code == 503
    # One line for the change, none per probe (not even django.request's error for a 503).
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ops.health", "WARNING", "not ready: migrations")
    ]


@pytest.mark.django_db(transaction=True)
async def test_the_async_path_answers_the_same():
    require_services(redis=True)
    client = AsyncClient()
    assert (await client.get("/healthz")).status_code == 200
    response = await client.get("/readyz")
    assert response.status_code == 200, response.content
    assert body(response)["checks"] == dict.fromkeys(CHECKS, "ok")


# --- real processes -------------------------------------------------------------------------


@pytest.mark.processes
def test_readyz_of_a_daphne_names_redis_while_redis_is_down_and_recovers(transactional_db):
    require_services(redis=True)
    redis = PrivateRedis()
    redis.start()
    stack = LiveStack(
        port=free_port(),
        env=subprocess_env(REDIS_URL=redis.url, FLOWDECK_CHANNEL_PREFIX="fdhealth"),
    )
    daphne_log = LOG_DIR / "daphne.log"
    log_start = daphne_log.stat().st_size if daphne_log.exists() else 0
    try:
        stack.start_daphne()
        assert httpx.get(f"{stack.http_url}/accounts/login/", timeout=30).status_code == 200
        url = f"{stack.http_url}/readyz"
        ready = httpx.get(url, timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == dict.fromkeys(CHECKS, "ok")

        redis.stop()
        down = httpx.get(url, timeout=30)
        assert down.status_code == 503
        assert down.json()["failing"] == ["cache", "channel_layer", "broker"]
        assert down.json()["checks"]["cache"].startswith("redis unreachable")
        assert down.json()["checks"]["database"] == "ok"
        assert httpx.get(f"{stack.http_url}/healthz", timeout=30).status_code == 200

        redis.start()  # the same port
        again = httpx.get(url, timeout=30)
        assert again.status_code == 200, again.text
    finally:
        stack.stop()
        redis.stop()
    # Daphne's access log has the other requests' lines, not the probes'.
    log = daphne_log.read_bytes()[log_start:].decode(errors="replace")
    assert '"GET /accounts/login/" 200' in log
    assert '"GET /readyz"' not in log and '"GET /healthz"' not in log


def worker_health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops.worker_health", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.processes
def test_worker_health_passes_for_a_live_worker_and_fails_once_it_is_killed(
    transactional_db, live_stack
):
    live_stack.start_worker("hworker", concurrency=2)
    node = f"hworker@{socket.gethostname()}"
    alive = worker_health(live_stack.env, "--node", "hworker@%h")
    assert alive.returncode == 0, alive.stderr
    assert alive.stdout.strip() == f"ok: worker {node} answered a ping"

    live_stack.kill("hworker")
    dead = worker_health(live_stack.env, "--node", "hworker@%h", "--timeout", "1")
    assert dead.returncode == 1
    assert dead.stderr.strip() == f"unhealthy: worker {node} did not answer a ping within 1s"
    # The session's own worker still answers.
    assert worker_health(live_stack.env, "--node", "worker@%h").returncode == 0


@pytest.mark.processes
def test_worker_health_names_the_broker_when_it_is_unreachable(transactional_db, live_stack):
    env = {**live_stack.env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = worker_health(env, "--node", "worker@%h", "--timeout", "1")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("unhealthy: broker unreachable")
