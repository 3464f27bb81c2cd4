"""Logging pieces for the console: the beat schedule's ticks and the health probes kept
quiet, readable lines.

Celery logs three INFO lines for every scheduled tick: beat's "Scheduler: Sending due task",
then the worker's "Task ... received" and "Task ... succeeded". The reaper is scheduled
every few seconds, so an idle installation printed a line a second or more, burying what
happened. `QuietTicks` drops exactly those lines for the scheduled tasks; everything else
(the reaper ending a run logs a warning of its own, a tick that fails logs an error, and
every run's task lines) still goes out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

# The loggers, and their messages, of the per-tick lines (celery.beat.Scheduler.apply_entry,
# celery.worker.strategy, celery.app.trace).
_TICK_LOGGERS = {"celery.beat", "celery.worker.strategy", "celery.app.trace"}
_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "data",  # Celery's copy of its message's arguments
}


class QuietTicks(logging.Filter):
    """Drops the INFO lines Celery writes for each tick of the scheduled `tasks`."""

    def __init__(self, tasks: Iterable[str] = ()) -> None:
        super().__init__()
        self.tasks = frozenset(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.name not in _TICK_LOGGERS:
            return True
        return _task_of(record) not in self.tasks


def _task_of(record: logging.LogRecord) -> str | None:
    data = getattr(record, "data", None)  # the worker's received/succeeded lines
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return data["name"]
    args = record.args
    if (  # beat: "Scheduler: Sending due task %s (%s)" % (entry name, task name)
        record.name == "celery.beat"
        and isinstance(args, tuple)
        and len(args) == 2
        and str(record.msg).startswith("Scheduler: Sending due task")
    ):
        return str(args[1])
    return None


class PlainFormatter(logging.Formatter):
    """One readable line per record, with the record's `extra` fields appended as
    `key=value` (the JSON formatter shows them as fields; a plain line would lose them,
    e.g. which runs the reaper ended)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}
        if not extra:
            return line
        fields = " ".join(f"{key}={_short(value)}" for key, value in extra.items())
        head, newline, rest = line.partition("\n")  # a traceback stays below the line
        return f"{head} {fields}{newline}{rest}"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:199] + "…"


# What load balancers and orchestrators poll, every second or so (ops.health).
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class QuietProbes:
    """Daphne's access log (its "action logger": one line per request, on stdout at the
    default verbosity) without the lines of health probes, which would otherwise outnumber
    every other request of a quiet installation."""

    def __init__(self, action_logger: Callable[[str, str, dict[str, Any]], None]) -> None:
        self.action_logger = action_logger

    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        if protocol == "http" and details.get("path") in PROBE_PATHS:
            return
        self.action_logger(protocol, action, details)
