"""`python -m ops.worker_health [--node NAME] [--timeout S]`: is this Celery worker alive and
reachable? For an orchestrator's health check of a worker container or unit: exit 0 when
healthy, 1 when not, and one line saying which part failed.

Two steps, so the line names the part: the broker accepts a connection (without it no
worker gets a run), then the worker's node answers a `ping` through Celery's remote control
(its consumer is reading the broker, not merely a live process).

A module, not a management command: it reads the settings but never loads the apps
(django.setup() imports every app, LangChain included: 4 s of CPU against 0.4 s here), which
matters for a check an orchestrator runs every few seconds on every worker.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from celery.utils.nodenames import default_nodename, host_format

PROBE_TIMEOUT_SECONDS = 2.0


def broker_problem(timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None if the Celery broker accepts a new connection now, else a short reason (the
    error's class: its message would carry the broker's address)."""
    from config.celery import app

    try:
        with app.connection_for_write(connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=math.ceil(timeout))
    except Exception as exc:  # any failure is "unreachable", reported, never raised
        return f"unreachable ({type(exc).__name__})"
    return None


def node_name(node: str | None) -> str:
    """A worker's full node name: `node` with `%h` (this host) expanded as the worker's own
    -n does, or Celery's default, celery@<this host>."""
    return host_format(node) if node else default_nodename("")


def worker_problem(node: str | None = None, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None if the worker `node` (Celery's node-name format, `%h` for this host; default
    Celery's own `celery@<host>`) answers a ping, else the one-line reason."""
    from config.celery import app

    name = node_name(node)
    problem = broker_problem(timeout)
    if problem:
        return f"broker {problem}"
    # limit=1: return on the first reply instead of waiting out the timeout.
    replies = app.control.ping(destination=[name], timeout=timeout, limit=1)
    if not any(name in reply for reply in replies or []):
        return f"worker {name} did not answer a ping within {timeout:g}s"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.worker_health", description=__doc__)
    parser.add_argument(
        "--node",
        help="the worker's node name as given to its -n (%%h: this host's name); "
        "default: Celery's own, celery@<this host>",
    )
    parser.add_argument("--timeout", type=float, default=PROBE_TIMEOUT_SECONDS)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    problem = worker_problem(args.node, args.timeout)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print(f"ok: worker {node_name(args.node)} answered a ping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
