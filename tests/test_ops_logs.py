"""The console stays quiet between events: the beat schedule's ticks (the reaper, every 5 s)
write nothing, while runs' task lines, failures and the reaper's own findings still do.
Plain lines keep the records' extra fields."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from celery import beat
from celery.app import trace
from celery.worker import strategy
from django.conf import settings

from ops.logs import PlainFormatter, QuietTicks

REAPER = "runs.tasks.reap_stale_runs"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def console() -> Iterator[Lines]:
    """A handler with the filters of the configured console handler (settings.LOGGING)."""
    configured = [h for h in logging.getLogger().handlers if h.get_name() == "console"]
    assert configured, "settings.LOGGING configures a console handler on the root logger"
    lines = Lines()
    lines.setFormatter(PlainFormatter("%(levelname)s %(name)s: %(message)s"))
    for f in configured[0].filters:
        lines.addFilter(f)
    root = logging.getLogger()
    level = root.level
    root.addHandler(lines)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(lines)
        root.setLevel(level)


def received(task: str) -> None:
    """The worker's line for a task it received, as celery.worker.strategy logs it."""
    context = {"id": "abc", "name": task, "args": "()", "kwargs": "{}", "eta": None}
    strategy.logger.info(trace.LOG_RECEIVED, context, extra={"data": context})


def succeeded(task: str) -> None:
    """The worker's line for a task that succeeded, through Celery's own helper."""
    trace.info(trace.LOG_SUCCESS, {"id": "abc", "name": task, "runtime": 0.01, "return_value": 0})


def test_the_reaper_ticks_write_nothing(console):
    beat.info("Scheduler: Sending due task %s (%s)", "reap-stale-runs", REAPER)
    received(REAPER)
    succeeded(REAPER)
    assert console.lines == []


def test_runs_failures_and_findings_still_log(console):
    received("runs.tasks.execute_run")
    succeeded("runs.tasks.execute_run")
    trace.logger.error(
        trace.LOG_FAILURE,
        {"id": "abc", "name": REAPER, "description": "raised unexpected", "exc": "boom"},
    )
    logging.getLogger("runs.services").warning("reaped stale runs", extra={"runs": ["r1"]})
    beat.info("Scheduler: Sending due task %s (%s)", "nightly", "audit.tasks.nightly")
    assert console.lines == [
        "INFO celery.worker.strategy: Task runs.tasks.execute_run[abc] received",
        "INFO celery.app.trace: Task runs.tasks.execute_run[abc] succeeded in 0.01s: 0",
        f"ERROR celery.app.trace: Task {REAPER}[abc] raised unexpected: boom",
        "WARNING runs.services: reaped stale runs runs=['r1']",
        "INFO celery.beat: Scheduler: Sending due task nightly (audit.tasks.nightly)",
    ]


def test_every_scheduled_task_is_quiet_and_only_those():
    quiet = QuietTicks(tasks=["a.tick"])
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    configured = settings.LOGGING["filters"]["quiet_ticks"]["tasks"]
    assert set(configured) == scheduled and REAPER in scheduled
    record = logging.makeLogRecord(
        {"name": "celery.app.trace", "levelno": logging.INFO, "data": {"name": "a.tick"}}
    )
    assert quiet.filter(record) is False
    record.data = {"name": "a.run"}
    assert quiet.filter(record) is True


def test_a_plain_line_keeps_extra_fields_and_its_traceback():
    formatter = PlainFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    record.run = "r1"
    first, *rest = formatter.format(record).splitlines()
    assert first == "ERROR failed run=r1"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: bad"
