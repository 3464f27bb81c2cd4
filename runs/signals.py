"""Worker start-up: end runs a previous incarnation of this worker left behind."""

from __future__ import annotations

import logging

from celery.signals import worker_ready

log = logging.getLogger(__name__)


@worker_ready.connect
def reap_on_start(**_: object) -> None:
    from runs.services import reap_stale_runs

    reap_stale_runs()
