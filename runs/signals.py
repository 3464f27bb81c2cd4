"""Worker start-up: end runs a previous incarnation of this worker left behind."""

from __future__ import annotations

import logging
import os
import sys

from celery.signals import worker_init, worker_ready

log = logging.getLogger(__name__)


@worker_ready.connect
def reap_on_start(**_: object) -> None:
    from runs.services import reap_stale_runs

    reap_stale_runs()


@worker_init.connect
def favour_io_threads(**_: object) -> None:
    """A worker holds many I/O-bound runs in threads; CPython hands the GIL over every 5 ms
    by default, so a thread woken by its socket can wait that long per hand-over. A shorter
    interval keeps token latency low when dozens of runs stream at once."""
    sys.setswitchinterval(float(os.environ.get("FLOWDECK_WORKER_SWITCH_INTERVAL_MS", "1")) / 1000)


@worker_ready.connect
def prepare_process(**_: object) -> None:
    """Import the provider clients once at start-up, not inside the first run's first
    token, then keep the collector off the start-up heap (config/runtime.py)."""
    from config.runtime import prepare_server_process

    prepare_server_process()
