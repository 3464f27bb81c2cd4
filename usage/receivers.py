"""What the usage app hangs on runs at start-up: recording a finished run's usage, and
the allowance its budgets leave (runs asks; it never imports usage)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from runs.budgets import register_allowance
from runs.finished import run_finished
from usage.selectors import tokens_left
from usage.services import record_run_usage


@receiver(run_finished, dispatch_uid="usage.record_run_usage")
def _record(*, run_id: str, **_: Any) -> None:
    record_run_usage(run_id=run_id)


def _tokens_left(workspace_id: int, api_token_id: int | None) -> int | None:
    return tokens_left(workspace_id, api_token_id)


register_allowance(_tokens_left)
