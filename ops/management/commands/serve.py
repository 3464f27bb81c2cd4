"""Run the whole platform on one machine: Redis (if none configured), Daphne, a Celery worker
and Celery beat.

This is what `make run` ends in. The children are the production processes, started with
the command lines of ops.processes (the Procfile's): Daphne with channels-redis, a Celery
worker on the Redis broker, and beat, which schedules the reaper; only Redis is started here,
when REDIS_URL is unset. Beat is a child of its own, not the worker's `-B`: an embedded beat
is the worker's child, and it outlived a supervisor that was killed.

No child outlives this supervisor, however it ends. SIGINT/SIGTERM stop the children in the
reverse order of their start — beat, the worker (which finishes or hands back its runs),
Daphne — and Redis last; a second signal kills what is left. Each child runs in its own
process group, so a Ctrl-C at the terminal reaches only this supervisor (otherwise Redis
would die at once under a worker still shutting down). If the supervisor itself is killed,
the kernel sends each child SIGTERM (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from ops.processes import (
    StartError,
    beat_command,
    die_with_parent,
    free_port,
    redis_server_binary,
    wait_for_port,
    web_command,
    worker_command,
)

STOP_TIMEOUT = 20.0  # seconds a child gets to stop after SIGTERM before it is killed
# Celery warns at every start of a worker running as root (it accepts JSON only, so it is a
# warning, not a refusal). Whoever starts `serve` as root (a container, a developer's VM)
# chose to; the warning is a Python warning (celery.exceptions.SecurityWarning), so
# Python's own warning filter silences it in the worker serve starts, and only there:
# a worker started from the Procfile or a systemd unit still warns.
ROOT_WARNING_FILTER = "ignore:You're running the worker with superuser privileges"


def ensure_port_free(host: str, port: int) -> None:
    """Fail with a clear message (not a Daphne traceback later) when the port is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {host}:{port} ({exc.strerror}); set PORT (and HOST) to "
                "another address, e.g. `PORT=8001 make run`"
            ) from exc


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The worker's environment: `env` plus the filter for Celery's root warning."""
    filters = [f for f in env.get("PYTHONWARNINGS", "").split(",") if f]
    return {**env, "PYTHONWARNINGS": ",".join([*filters, ROOT_WARNING_FILTER])}


class Command(BaseCommand):
    help = (
        "Serve Flowdeck: Daphne, a Celery worker and beat "
        "(+ a private Redis when REDIS_URL is unset)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--concurrency",
            type=int,
            default=int(os.environ.get("FLOWDECK_WORKER_THREADS", "32")),
            help="concurrent runs held by the worker (threads; runs are I/O bound)",
        )
        parser.add_argument(
            "--prepare",
            action="store_true",
            help="first migrate, collect static files and, on the embedded default, seed the "
            "demo (what `make run` does), in this process so start-up pays for loading Django once",
        )
        parser.add_argument(
            "--demo",
            action="store_true",
            help="with --prepare: seed the demo login (public password) even on a configured "
            "database; without this it is created on the embedded default only",
        )

    def handle(
        self,
        *args: Any,
        host: str,
        port: int,
        concurrency: int,
        prepare: bool,
        demo: bool = False,
        **opts: Any,
    ) -> None:
        ensure_port_free(host, port)
        if prepare:
            self._prepare(demo=demo)
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.signals = 0
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        env = dict(os.environ)
        try:
            if not settings.REDIS_URL:
                env["REDIS_URL"] = self._start_redis()
            daphne = self._spawn("daphne", web_command(host=host, port=port), env)
            self._spawn("worker", worker_command(concurrency=concurrency), worker_env(env))
            schedule = Path(settings.DATA_DIR) / "celerybeat-schedule"
            self._spawn("beat", beat_command(schedule=schedule), env)
            self._wait_for_port(host, port, 60, daphne)
            self._say(self.style.SUCCESS(f"Flowdeck is serving on http://{host}:{port}/"))
            self._say("Press Ctrl-C to stop.")
            while not self.signals:
                for name, proc in self.children:
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping")
                        self.signals = 1
                        break
                time.sleep(0.3)
        finally:
            self._stop_all()

    def _prepare(self, *, demo: bool) -> None:
        demo = demo or settings.EMBEDDED
        steps: list[tuple[str, dict[str, Any]]] = [
            ("migrate", {"interactive": False}),
            ("collectstatic", {"interactive": False, "verbosity": 0}),
        ]
        if demo:  # a login with a public password: never on a production database unasked
            steps.append(("seed_demo", {}))
        for command, options in steps:
            self._say(f"manage.py {command}")
            call_command(command, stdout=self.stdout, **options)
        if not demo:
            self._say(
                "No demo login on a configured database: create a workspace with "
                "`manage.py createworkspace <slug> --owner <email>` (or serve --demo)."
            )
        connections.close_all()  # the children open their own

    def _say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()  # a pipe (a test, a process manager) sees it now, not at exit

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals += 1  # the first stops in order; a second one kills what is left

    def _wait_for_port(self, host: str, port: int, timeout: float, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout
        while not self.signals and time.monotonic() < deadline:
            try:
                wait_for_port(host, port, 0.5, proc)
                return
            except StartError as exc:
                if proc.poll() is not None:
                    raise CommandError(str(exc)) from exc
        if not self.signals:
            raise CommandError(f"nothing listened on {host}:{port} within {timeout}s")

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        if self.signals:
            raise CommandError("interrupted while starting")
        proc = subprocess.Popen(  # noqa: PLW1509 (preexec_fn: the children die with us)
            cmd, env=env, preexec_fn=die_with_parent(), process_group=0
        )
        self.children.append((name, proc))
        self._say(f"Started {name} (pid {proc.pid})")
        return proc

    def _start_redis(self) -> str:
        port = free_port()
        password = secrets.token_hex(16)
        data_dir = Path(settings.DATA_DIR)
        try:
            binary = redis_server_binary()
        except StartError as exc:
            raise CommandError(str(exc)) from exc
        proc = self._spawn(
            "redis",
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--requirepass",
                password,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data_dir),
                "--logfile",
                str(data_dir / "redis.log"),
            ],
            dict(os.environ),
        )
        self._wait_for_port("127.0.0.1", port, 20, proc)
        self._say(f"Started a private Redis on 127.0.0.1:{port}")
        return f"redis://:{password}@127.0.0.1:{port}/0"

    def _stop_all(self) -> None:
        # Beat first (no new ticks), then the worker (it finishes or hands back its runs) and
        # Daphne, Redis last: the reverse order of their start.
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline and self.signals < 2:
                time.sleep(0.1)
            if proc.poll() is None:
                self.stderr.write(f"{name} did not stop; killing it")
                proc.kill()
            proc.wait()
        self._say("Stopped.")
