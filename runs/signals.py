"""Worker start-up: end runs a previous incarnation of this worker left behind."""

from __future__ import annotations

from celery.signals import worker_ready


@worker_ready.connect
def reap_on_start(**_: object) -> None:
    from runs.services import reap_stale_runs

    reap_stale_runs()


@worker_ready.connect
def prepare_process(**_: object) -> None:
    """Import the provider clients once at start-up, not inside the first run's first
    token, then keep the collector off the start-up heap (config/runtime.py)."""
    from config.runtime import prepare_server_process
    from flows.components.llm import warm_up_model_clients

    prepare_server_process(warm_up=warm_up_model_clients)
