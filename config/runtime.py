"""Process start-up for the long-running servers (Daphne, Celery workers).

A Flowdeck process holds a large, long-lived heap: Django, LangChain, provider SDKs and
hundreds of pydantic models, several hundred thousand objects. CPython's cyclic garbage
collector walks all of them on every full collection, holding the GIL meanwhile; measured
in a worker, such a walk stalled every stream of the process for 40-240 ms. So the
servers import what they will need once, at start, and then freeze that heap
(`gc.freeze()`): later collections only walk objects created afterwards.

They also hand the GIL over more often than CPython's default 5 ms: in both servers an
event loop that streams tokens shares the interpreter with threads doing ORM work (the
sink, Daphne's database thread), and a loop woken by its socket would otherwise wait up
to 5 ms per hand-over, several times per delivered event.

Both are settings of a whole process, so they are made when a server process starts and
never on import: the web process's entry point (`python -m ops.web`) and the worker's
`worker_ready` signal (runs/signals.py) call `prepare_server_process`; a process that merely
imports the application (the test suite, a shell, a management command) is left alone.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

# Imported at start instead of inside the first run (they take seconds on a busy machine).
EAGER_MODULES = (
    "flows.builder",
    "flows.components.registry",
    "langchain_openai",
    "langchain_anthropic",
    "langchain_ollama",
)


def prepare_server_process(warm_up: Callable[[], None] | None = None) -> None:
    """Switch interval, eager imports, then `warm_up` (what else the process should do
    once before serving), then freeze the heap."""
    sys.setswitchinterval(float(os.environ.get("FLOWDECK_SWITCH_INTERVAL_MS", "1")) / 1000)
    for module in EAGER_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional provider that is not installed
            log.info("module %s not installed", module)
    if warm_up is not None:
        try:
            warm_up()
        except Exception:  # a warm-up is an optimisation: never a reason not to serve
            log.warning("warm-up failed", exc_info=True)
    gc.collect()
    gc.freeze()
