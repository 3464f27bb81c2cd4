"""The web, worker and beat command lines come from one place (ops.processes): the Procfile
and the systemd units in platform/README.md say exactly what it builds, so `serve`, the
live-stack tests and production cannot drift apart."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from ops.processes import beat_command, web_command, worker_command

PLATFORM = Path(__file__).resolve().parent.parent / "platform"
VENV_PYTHON = "/srv/flowdeck/.venv/bin/python"  # the units' virtualenv


def procfile() -> dict[str, list[str]]:
    """Each Procfile process as the words a shell would split it into (the `${VAR:-default}`
    placeholders left as they are: the runner expands them)."""
    processes = {}
    for line in (PLATFORM / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = shlex.split(command)
    return processes


def test_the_procfile_runs_what_ops_processes_builds():
    assert procfile() == {
        "web": web_command(
            python="python", host="${HOST:-127.0.0.1}", port="${PORT:-8000}", proxy_headers=True
        ),
        "worker": worker_command(python="python", concurrency="${FLOWDECK_WORKER_THREADS:-32}"),
        "beat": beat_command(
            python="python", schedule="${FLOWDECK_DATA_DIR:-var}/celerybeat-schedule"
        ),
    }


def systemd_exec_starts() -> list[list[str]]:
    text = (PLATFORM / "README.md").read_text()
    return [shlex.split(m) for m in re.findall(r"^ExecStart=(.+)$", text, flags=re.M)]


def test_the_systemd_units_run_what_ops_processes_builds():
    assert systemd_exec_starts() == [
        web_command(python=VENV_PYTHON, host="127.0.0.1", port="%i", proxy_headers=True),
        worker_command(python=VENV_PYTHON, concurrency=32),
        beat_command(python=VENV_PYTHON, schedule="/var/lib/flowdeck/celerybeat-schedule"),
    ]


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (web_command(host="h", port=1), ["-m", "ops.web", "-b", "h", "-p", "1"]),
        (worker_command(concurrency=4), ["-m", "celery", "-A", "config", "worker"]),
        (beat_command(schedule="s"), ["-m", "celery", "-A", "config", "beat"]),
    ],
    ids=["web", "worker", "beat"],
)
def test_each_process_is_started_through_this_interpreter(command, words):
    assert command[0] == sys.executable
    assert command[1 : 1 + len(words)] == words


def test_beat_is_never_embedded_in_a_worker():
    # An embedded beat (-B) is the worker's own child and outlived a killed supervisor.
    assert "-B" not in worker_command(concurrency=4)
    assert "--beat" not in worker_command(concurrency=4)
