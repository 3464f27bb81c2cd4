"""`run_finished`: sent once a run's end has been written (its log and final row), so
other apps (usage) can act on a finished run without the engine importing them."""

from __future__ import annotations

import logging

from django.db import connection
from django.dispatch import Signal

log = logging.getLogger(__name__)

# Sent with `run_id` (str). Receivers read what they need from the stored log.
run_finished = Signal()


def announce_finished(run_id: str) -> None:
    """Tell the receivers; a failing receiver is logged, never fails the run."""
    for receiver, result in run_finished.send_robust(sender=None, run_id=run_id):
        if isinstance(result, Exception):
            log.error("run_finished receiver %r failed for run %s: %r", receiver, run_id, result)
    if not connection.in_atomic_block:
        connection.close()  # the pool thread only waits from here on (as after a start)
