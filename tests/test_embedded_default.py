"""The embedded default, started exactly as the README says: `make run`.

No DATABASE_URL, no REDIS_URL: the platform must come up on SQLite with a private Redis,
Daphne, a Celery worker and beat as children of `manage.py serve`, print a demo login that
works, and leave no process behind when stopped the way Ctrl-C stops it (SIGINT to the
process group of the terminal's foreground job) — nor when the supervisor is killed. On the
console it reads like a product: plain lines, nothing printed while idle.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shelve
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ops.processes import beat_command, web_command, worker_command

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
    """`make run` (or `command`) as a child in its own session, its output read as it comes."""

    def __init__(self, port: int, data_dir: Path, command: list[str] | None = None) -> None:
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
            command or ["make", "run"],
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
    assert set(children) == {"redis", "daphne", "worker", "beat"}, platform.tail()
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


# --- `manage.py serve` on its own: the console while idle, and a killed supervisor -------

IDLE_SECONDS = 12  # the reaper is scheduled every 5 s: at least two ticks go by unprinted
# beat's "Scheduler: Sending due task reap-stale-runs (...)"; the worker's "Task
# runs.tasks.reap_stale_runs[<id>] received" and "... succeeded in ...".
TICK_WORDS = ("Sending due task", "reap_stale_runs[")


def proc_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> dict[int, str]:
    """Every live descendant of `root`, with its start time (a pid the kernel hands out
    again later is then not taken for a survivor)."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := proc_fields(int(entry.name))):
            parents[int(entry.name)] = (int(fields[1]), fields[19])
    tree: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in parents.items():
            if ppid == parent and pid not in tree:
                tree[pid] = started
                frontier.append(pid)
    return tree


def still_running(pid: int, started: str) -> bool:
    fields = proc_fields(pid)  # a zombie has exited; only its exit status waits for a reaper
    return fields is not None and fields[0] != "Z" and fields[19] == started


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def is_json_line(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Platform]:
    """`manage.py serve --prepare` (migrate, collectstatic, demo) on the embedded default."""
    command = [sys.executable, "manage.py", "serve", "--prepare"]
    started = Platform(free_port(), tmp_path / "data", command=command)
    try:
        yield started
    finally:
        started.kill_everything()


def start_demo_run(platform: Platform, base: str) -> str:
    """A run of the demo workspace's "Hello demo" flow through the API; its run id."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_FROM_A_USERS_SHELL}
    env = {k: v for k, v in env.items() if not k.startswith("FLOWDECK_")}
    env["FLOWDECK_DATA_DIR"] = str(platform.data_dir)
    issued = subprocess.run(
        [sys.executable, "manage.py", "issuetoken", "demo", "demo@flowdeck.local"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert issued.returncode == 0, issued.stderr
    headers = {"Authorization": f"Bearer {issued.stdout.strip().splitlines()[-1]}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
        flows = {f["name"]: f["id"] for f in api.get("/api/w/demo/flows").json()}
        started = api.post(
            f"/api/w/demo/flows/{flows['Hello demo']}/runs", json={"inputs": {"input": "hi"}}
        )
        assert started.status_code == 202, started.text
        return started.json()["run_id"]


def test_serve_is_quiet_while_idle_and_nothing_outlives_a_killed_supervisor(
    served: Platform,
) -> None:
    platform = served
    base = f"http://127.0.0.1:{platform.port}"
    platform.wait_for(rf"serving on {re.escape(base)}/", START_TIMEOUT)
    platform.wait_for(r"celery@\S+ ready", 120)
    children = platform.children()
    assert set(children) == {"redis", "daphne", "worker", "beat"}, platform.tail()
    # The children run the command lines of ops.processes (the Procfile's), beat included
    # as a process of its own.
    schedule = platform.data_dir / "celerybeat-schedule"
    assert cmdline(children["daphne"])[1:] == web_command(host="127.0.0.1", port=platform.port)[1:]
    assert cmdline(children["worker"])[1:] == worker_command(concurrency=32)[1:]
    assert cmdline(children["beat"])[1:] == beat_command(schedule=schedule)[1:]

    # Idle: the beat schedule ticks, the console says nothing about it.
    mark = len(platform.lines)
    time.sleep(IDLE_SECONDS)
    idle = platform.lines[mark:]
    # Then a real event: a run's task lines still reach the console.
    run_id = start_demo_run(platform, base)
    platform.wait_for(r"Task runs\.tasks\.execute_run\[\S+\] succeeded", 120)

    output = list(platform.lines)
    assert [line for line in output if is_json_line(line)] == [], platform.tail()
    assert [line for line in output if any(w in line for w in TICK_WORDS)] == []
    repeated = [line for line in set(idle) if line.strip() and idle.count(line) > 1]
    assert repeated == [], idle
    assert "superuser privileges" not in platform.output  # Celery's root warning
    # ...in plain lines that keep the record's fields.
    assert any(f"run queued run={run_id} workspace=demo" in line for line in output), output

    # SIGKILL the supervisor: every process it started, and theirs, goes too.
    tree = process_tree(platform.proc.pid)
    assert set(children.values()) <= set(tree), (children, tree)
    os.kill(platform.proc.pid, signal.SIGKILL)
    platform.proc.wait(timeout=30)
    deadline = time.monotonic() + 90
    survivors = dict(tree)
    while survivors and time.monotonic() < deadline:
        survivors = {pid: t for pid, t in survivors.items() if still_running(pid, t)}
        time.sleep(0.2)
    named = {pid: " ".join(cmdline(pid))[:120] for pid in survivors if proc_fields(pid)}
    assert survivors == {}, named

    # Beat did tick while the console was quiet (it saves its schedule when it stops).
    with shelve.open(str(schedule), flag="r") as saved:
        assert saved["entries"]["reap-stale-runs"].total_run_count >= 3
