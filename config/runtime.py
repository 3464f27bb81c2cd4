"""Process start-up for the long-running servers (Daphne, Celery workers).

A Flowdeck process holds a large, long-lived heap: Django, LangChain, provider SDKs and
hundreds of pydantic models, several hundred thousand objects. CPython's cyclic garbage
collector walks all of them on every full collection, holding the GIL meanwhile; measured
in a worker, such a walk stalled every stream of the process for 40-240 ms. So the
servers import what they will need once, at start, and then freeze that heap
(`gc.freeze()`): later collections only walk objects created afterwards.
"""

from __future__ import annotations

import gc
import importlib
import logging

log = logging.getLogger(__name__)

# Imported at start instead of inside the first run (they take seconds on a busy machine).
EAGER_MODULES = (
    "flows.builder",
    "flows.components.registry",
    "langchain_openai",
    "langchain_anthropic",
    "langchain_ollama",
)


def prepare_server_process() -> None:
    for module in EAGER_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional provider that is not installed
            log.info("module %s not installed", module)
    gc.collect()
    gc.freeze()
