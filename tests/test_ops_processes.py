"""The web, worker and beat command lines come from one place (ops.processes): the Procfile
says exactly what it builds (and the systemd units, the Dockerfile and docker-compose.yml do
too: tests/test_deploy_files.py), so `serve`, the live-stack tests and production cannot
drift apart."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from ops.processes import beat_command, web_command, worker_command

PLATFORM = Path(__file__).resolve().parent.parent / "platform"


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
