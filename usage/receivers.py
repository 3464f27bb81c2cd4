from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from runs.finished import run_finished


@receiver(run_finished, dispatch_uid="usage.record_run_usage")
def _record(*, run_id: str, **_: Any) -> None:
    from usage.services import record_run_usage

    record_run_usage(run_id=run_id)
