"""Health and readiness: what a load balancer, an orchestrator and a monitor poll.

- `/healthz`: the process is alive and answers. It touches nothing (no database, no Redis),
  so a database outage never makes an orchestrator restart every web process.
- `/readyz`: this process can serve. PostgreSQL answers, the Redis behind the cache and the
  one behind the channel layer answer, the Celery broker accepts a connection, and the
  database holds every migration this code has. 200 `{"status": "ok", "checks": {...}}`,
  or 503 `{"status": "unavailable", "failing": [...], "checks": {...}}` naming the part
  that failed (the reason is short: a class of error, never an address or a secret).

Both are answered by `HealthMiddleware`, first in MIDDLEWARE, before anything else reads
the request: no session, no CSRF, no login, no audit context, no rate limit, no
ALLOWED_HOSTS check (a probe arrives by a pod's or a machine's address, not the site's
name) and no HTTPS redirect (a probe speaks plain HTTP to Daphne, behind the proxy). A 200
is never logged (Daphne writes no access log; see ops.processes); a failing /readyz logs one
WARNING when the set of failing parts changes in this process, not one per probe.

Cost, so that polling every second is cheap: /healthz nothing. /readyz one query (`SELECT
1`, or, every MIGRATION_CHECK_SECONDS, the applied-migrations query in its place), one PING
per distinct Redis (long-lived clients) and one broker connection. The migration graph on
disk is read once per process: the code does not change under a running process, the
database may.

`python -m ops.worker_health` is the worker's counterpart, for an orchestrator: the broker,
then a ping to the worker's node.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import ProgrammingError, connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.http import HttpRequest, HttpResponse
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from config.celery import app as celery_app
from ops.worker_health import broker_problem

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
PROBE_TIMEOUT_SECONDS = 2.0  # each backing service gets this long to answer a probe
MIGRATION_CHECK_SECONDS = 10.0  # the applied-migrations answer is reused this long
# A probe that arrives while another is checking waits this long for that answer (one
# check at a time per process: during an outage, probes must not pile up threads that all
# wait on the database pool's timeout).
CONCURRENT_WAIT_SECONDS = 3.0
OK = "ok"


@dataclass(frozen=True)
class Readiness:
    """The answer of one readiness check: every part's state, "ok" or a short reason."""

    checks: dict[str, str]
    finished_at: float = field(default_factory=time.monotonic)

    @property
    def failing(self) -> list[str]:
        return [name for name, state in self.checks.items() if state != OK]

    @property
    def ok(self) -> bool:
        return not self.failing

    def as_json(self) -> dict[str, Any]:
        if self.ok:
            return {"status": "ok", "checks": self.checks}
        return {"status": "unavailable", "failing": self.failing, "checks": self.checks}


def _reason(exc: BaseException) -> str:
    # The class only: messages carry addresses (and some drivers' carry a DSN).
    return f"unreachable ({type(exc).__name__})"


# --- the parts ----------------------------------------------------------------------------

_redis_clients: dict[str, Redis] = {}
_redis_lock = threading.Lock()


def _redis_client(url: str) -> Redis:
    """One long-lived client per Redis URL, with short timeouts and a single immediate retry
    (a socket left stale by a Redis restart reconnects; a Redis that refuses fails at once,
    instead of redis-py's default backoff of several seconds)."""
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            client = Redis.from_url(
                url,
                socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
                socket_timeout=PROBE_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 1),
            )
            _redis_clients[url] = client
        return client


def _redis_urls_of_cache() -> list[str]:
    cache = settings.CACHES["default"]
    if not cache["BACKEND"].endswith("RedisCache"):
        return []  # an in-process cache (the embedded default without Redis) is always there
    location = cache["LOCATION"]
    urls = location.split(",") if isinstance(location, str) else list(location)
    return [url.strip() for url in urls if url.strip()]


def _redis_urls_of_channel_layer() -> list[str]:
    layer: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    hosts = layer.get("CONFIG", {}).get("hosts", [])
    return [host["address"] if isinstance(host, dict) else str(host) for host in hosts]


def _ping_all(urls: list[str], answers: dict[str, str]) -> str:
    """"ok" if every Redis in `urls` answers PING; `answers` memoizes per URL, so the cache
    and the channel layer on one Redis cost one PING."""
    for url in urls:
        if url not in answers:
            try:
                _redis_client(url).ping()
                answers[url] = OK
            except Exception as exc:  # any failure is "not ready", named, never a 500
                answers[url] = "redis " + _reason(exc)
        if answers[url] != OK:
            return answers[url]
    return OK


def _broker_state(answers: dict[str, str]) -> str:
    """A Redis broker (the usual one) is pinged like the other Redis clients, on the same
    memo (often the same server); any other transport gets a connection of its own."""
    url = celery_app.conf.broker_url or ""
    if url.startswith(("redis://", "rediss://")) and ";" not in url:  # not a failover list
        return _ping_all([url], answers)
    problem = broker_problem()
    return f"broker {problem}" if problem else OK


class _MigrationCheck:
    """Which migrations of this code the database lacks, re-asked every
    MIGRATION_CHECK_SECONDS. The graph on disk is loaded once (the slow part)."""

    def __init__(self) -> None:
        self._expected: dict[tuple[str, str], list[tuple[str, str]]] | None = None
        self._answer: str | None = None
        self._asked_at = 0.0

    def _expected_migrations(self) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """Each node of the migration graph -> the migrations it replaces (a squashed one
        counts as applied when all of those are, as Django's loader decides)."""
        if self._expected is None:
            loader = MigrationLoader(None, ignore_no_migrations=True)
            self._expected = {
                key: list(loader.disk_migrations[key].replaces) for key in loader.graph.nodes
            }
        return self._expected

    def __call__(self) -> str:
        """"ok", or how many migrations are unapplied: the last answer while it is fresh,
        else a new one (one query)."""
        answer = self.fresh_answer()
        if answer is not None:
            return answer
        try:  # the rows only (applied_migrations() would first ask whether the table exists)
            applied = set(MigrationRecorder(connection).migration_qs.values_list("app", "name"))
        except ProgrammingError:  # no django_migrations table: nothing applied yet
            applied = set()
        missing = [
            key
            for key, replaces in self._expected_migrations().items()
            if key not in applied and not (replaces and all(r in applied for r in replaces))
        ]
        self._answer = OK if not missing else f"{len(missing)} unapplied"
        self._asked_at = time.monotonic()
        return self._answer

    def fresh_answer(self) -> str | None:
        """The last answer if it is younger than MIGRATION_CHECK_SECONDS."""
        if time.monotonic() - self._asked_at < MIGRATION_CHECK_SECONDS:
            return self._answer
        return None

    def forget(self) -> None:
        self._answer = None


migrations_check = _MigrationCheck()


def _database_and_migrations() -> tuple[str, str]:
    """PostgreSQL's state and the migrations' state, in one query: the applied-migrations
    query when its answer is due, else `SELECT 1`."""
    try:
        if migrations_check.fresh_answer() is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        return OK, migrations_check()
    except Exception as exc:
        return _reason(exc), "unknown (database unreachable)"


def check_readiness() -> Readiness:
    """Ask every part once (the work behind /readyz)."""
    database, migrations = _database_and_migrations()
    answers: dict[str, str] = {}
    checks = {
        "database": database,
        "migrations": migrations,
        "cache": _ping_all(_redis_urls_of_cache(), answers),
        "channel_layer": _ping_all(_redis_urls_of_channel_layer(), answers),
        "broker": _broker_state(answers),
    }
    return Readiness(checks)


_check_lock = threading.Lock()
_last: Readiness | None = None
_last_failing: list[str] = []


def readiness() -> Readiness:
    """check_readiness, one at a time per process: a probe that arrives during a check waits
    (up to CONCURRENT_WAIT_SECONDS) and takes that check's answer."""
    global _last
    arrived = time.monotonic()
    if not _check_lock.acquire(timeout=CONCURRENT_WAIT_SECONDS):
        return Readiness({"checks": "timed out (another check is still waiting)"})
    try:
        if _last is not None and _last.finished_at >= arrived:
            return _last  # a check that ran while this probe waited answers it too
        _last = check_readiness()
        _log_change(_last)
        return _last
    finally:
        _check_lock.release()


def _log_change(result: Readiness) -> None:
    global _last_failing
    if result.failing == _last_failing:
        return
    if result.failing:
        log.warning("not ready: %s", ", ".join(result.failing), extra={"checks": result.checks})
    else:
        log.warning("ready again", extra={"checks": result.checks})
    _last_failing = result.failing


# --- the endpoints --------------------------------------------------------------------------


def _json(body: dict[str, Any], status: int) -> HttpResponse:
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    # The failing state is logged once per change (_log_change); without this Django would
    # log every 503 probe as an error.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def _not_allowed() -> HttpResponse:
    response = _json({"code": "method_not_allowed", "message": "Use GET or HEAD."}, 405)
    response["Allow"] = "GET, HEAD"
    return response


def healthz() -> HttpResponse:
    return _json({"status": "ok"}, 200)


def readyz_response(result: Readiness) -> HttpResponse:
    return _json(result.as_json(), 200 if result.ok else 503)


class HealthMiddleware:
    """Answers /healthz and /readyz before any other middleware sees the request (see the
    module docstring for why); every other request passes through untouched. Sync and
    async, so it adds no thread hop to Daphne's async chain."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        if request.path_info == HEALTH_PATH:
            return healthz() if request.method in ("GET", "HEAD") else _not_allowed()
        if request.path_info == READY_PATH:
            return readyz_response(readiness()) if request.method in ("GET", "HEAD") else _not_allowed()
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> Any:
        if request.path_info == HEALTH_PATH:
            return healthz() if request.method in ("GET", "HEAD") else _not_allowed()
        if request.path_info == READY_PATH:
            if request.method not in ("GET", "HEAD"):
                return _not_allowed()
            # In the request's own thread, as Django runs sync views: its database
            # connection goes back to the pool when the request ends.
            return readyz_response(await sync_to_async(readiness)())
        return await self.get_response(request)
