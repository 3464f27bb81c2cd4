"""The embedded default, started exactly as the README says: `make run`.

No DATABASE_URL, no REDIS_URL: the platform must come up on SQLite with a private Redis,
Daphne and a Celery worker as children of `manage.py serve`, print a demo login that works,
and leave no process behind when stopped the way Ctrl-C stops it (SIGINT to the process
group of the terminal's foreground job).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.processes, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 420  # a first `make run` may still install packages and build the front end
STOP_TIMEOUT = 60
# Variables of this test process that a user's shell would not have: the test settings,
# the CI services, and make's own bookkeeping when the suite itself runs under `make test`.
NOT_FROM_A_USERS_SHELL = (
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
    "HOST",
    "PORT",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of a live process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces
    return fields[0], int(fields[2]), int(fields[3])


def processes_of(group: int) -> list[int]:
    """Every process whose session or process group is `group` (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and group in (stat[1], stat[2]):
                found.append(int(entry.name))
    return found


class Platform:
    """`make run` as a child in its own session, its output read as it comes."""

    def __init__(self, port: int, data_dir: Path) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in NOT_FROM_A_USERS_SHELL and not key.startswith("FLOWDECK_")
        }
        env.update(HOST="127.0.0.1", PORT=str(port), FLOWDECK_DATA_DIR=str(data_dir))
        self.data_dir = data_dir
        self.port = port
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["make", "run"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.session = self.proc.pid  # a session leader's pid is its session and group id
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader catch the last lines
                pytest.fail(f"`make run` exited with {self.proc.returncode}:\n{self.tail()}")
            time.sleep(0.1)
        pytest.fail(f"no line matching {pattern!r} within {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    def children(self) -> dict[str, int]:
        return {
            m.group(1): int(m.group(2))
            for line in self.lines
            if (m := re.search(r"Started (\w+) \(pid (\d+)\)", line))
        }

    def kill_everything(self) -> None:
        """Last resort so a failing test leaves nothing running either."""
        for pid in [*processes_of(self.session), *self.children().values()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    started = Platform(free_port(), tmp_path / "data")
    try:
        yield started
    finally:
        started.kill_everything()


def test_make_run_serves_the_demo_login_and_ctrl_c_leaves_nothing_behind(
    platform: Platform,
) -> None:
    base = f"http://127.0.0.1:{platform.port}"
    platform.wait_for(rf"serving on {re.escape(base)}/", START_TIMEOUT)
    email, password = platform.wait_for(r"Demo login: (\S+@\S+) / (.+)$", 5).groups()
    platform.wait_for(r"celery@\S+ ready", 60)  # the worker reached the private Redis broker

    children = platform.children()
    assert set(children) == {"redis", "daphne", "worker"}, platform.tail()
    for name, pid in children.items():
        stat = proc_stat(pid)
        assert stat is not None and stat[2] == platform.session, f"{name} runs in the session"
    assert "private Redis" in platform.output  # REDIS_URL was unset: serve started its own

    with httpx.Client(base_url=base, timeout=10) as http:
        page = http.get("/accounts/login/")
        assert page.status_code == 200 and 'name="password"' in page.text
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert csrf, "the login form carries a CSRF token"
        assert http.get("/static/flowdeck.css").status_code == 200  # collected and served

        login = http.post(
            "/accounts/login/",
            data={"csrfmiddlewaretoken": csrf.group(1), "username": email, "password": password},
        )
        assert login.status_code == 302, login.text[:500]
        home = http.get("/", follow_redirects=True)
        assert home.status_code == 200 and str(home.url).endswith("/w/demo/")
        assert email in home.text
        api = http.get("/api/w/demo/")
        assert api.status_code == 200 and api.json()["role"] == "owner"

    # The database (and SQLite's WAL files beside it) and the secrets: this user's only.
    data = platform.data_dir
    private = ["flowdeck.sqlite3", "flowdeck.sqlite3-wal", "flowdeck.sqlite3-shm"]
    private += ["secret_key", "encryption_key", "audit_key"]
    modes = {name: oct((data / name).stat().st_mode & 0o777) for name in private}
    assert modes == {name: "0o600" for name in private}, modes

    # Ctrl-C: SIGINT to the foreground process group (make and what it ran).
    os.killpg(platform.session, signal.SIGINT)
    try:
        platform.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`make run` still running {STOP_TIMEOUT}s after SIGINT:\n{platform.tail()}")

    deadline = time.monotonic() + 15
    left: list[int] = []
    while time.monotonic() < deadline:
        left = processes_of(platform.session) + [
            pid for pid in children.values() if proc_stat(pid) is not None
        ]
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"processes left behind: {sorted(set(left))}\n{platform.tail()}"
    assert "did not stop; killing it" not in platform.output, platform.tail()
    assert "Stopped." in platform.output


def test_setup_is_a_no_op_the_second_time() -> None:
    """`make run` / `make test` start with `setup`: once done, it must do nothing, quickly."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_FROM_A_USERS_SHELL}
    first = subprocess.run(
        ["make", "setup"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert first.returncode == 0, first.stdout + first.stderr
    stamps = [REPO / ".venv" / ".installed-stamp", REPO / "static" / "build" / ".stamp"]
    stamped = [path.stat().st_mtime_ns for path in stamps if path.exists()]
    dry = subprocess.run(
        ["make", "-n", "setup"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    commands = [line for line in dry.stdout.splitlines() if not line.startswith("make")]
    assert not commands, f"a second `make setup` would still run:\n{dry.stdout}"
    second = subprocess.run(
        ["make", "setup"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    # "Quickly" because it does nothing: no recipe ran (make echoes each one it runs) and
    # no stamp was touched; not a number of seconds, which a loaded machine would stretch.
    assert second.returncode == 0, second.stdout + second.stderr
    ran = [line for line in second.stdout.splitlines() if not line.startswith("make")]
    assert not ran, f"a second `make setup` ran:\n{second.stdout}"
    assert [path.stat().st_mtime_ns for path in stamps if path.exists()] == stamped
