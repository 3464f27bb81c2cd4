"""One asyncio event loop per worker process, shared by every run the process holds.

Celery hands each run to a pool thread; that thread claims the run and builds its plan
(blocking ORM work), then submits the run's coroutine to this loop and waits for it. All
model streams of the process are therefore multiplexed on one thread: no GIL convoy of
dozens of run threads each waking for its own chunks (measured: half the CPU per token
of a loop per run thread with 50 concurrent runs), and HTTP connection pools are shared
between runs instead of being rebuilt per run.

The contract for components follows: `execute` must never block the loop. Blocking I/O
(the ORM) goes through `flows.components.util.run_db` / `to_thread`, whose executor is
sized for a worker's concurrency; CPU-bound work whose cost a user controls (arithmetic,
large parses) goes through `flows.components.cpu.cpu_bound`, a time-limited process pool,
because a thread computing in C keeps the GIL; and users' regexes run on RE2
(`flows.components.patterns`), never on backtracking `re`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

BLOCKING_THREADS = 32


class RunLoop:
    def __init__(self, name: str = "run-loop") -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix="run-io")
        )
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set()
        loop.run_forever()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Schedule `callback(*args)` on the loop from any thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(callback, *args)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the shared loop and block the calling thread until it is done."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


_run_loop: RunLoop | None = None
_lock = threading.Lock()


def get_run_loop() -> RunLoop:
    global _run_loop
    with _lock:
        if _run_loop is None or not _run_loop.alive:
            _run_loop = RunLoop()
        return _run_loop
