"""One asyncio event loop per worker process, shared by every run the process holds.

Celery hands each run to a pool thread; that thread claims the run and builds its plan
(blocking ORM work), then submits the run's coroutine to this loop and waits for it. All
model streams of the process are therefore multiplexed on one thread: no GIL convoy of
dozens of run threads each waking for its own chunks (measured: half the CPU per token
of a loop per run thread with 50 concurrent runs), and HTTP connection pools are shared
between runs instead of being rebuilt per run.

The contract for components follows: `execute` must never block the loop. Blocking I/O
(the ORM) goes through `flows.components.util.run_db` / `to_thread`, whose executor
(`run-io`) is sized for a worker's concurrency; CPU-bound work whose cost a user controls (arithmetic,
large parses) goes through `flows.components.cpu.cpu_bound`, a time-limited process pool,
because a thread computing in C keeps the GIL; and users' regexes run on RE2
(`flows.components.patterns`), never on backtracking `re`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

BLOCKING_THREADS = 32
YIELD_EVERY = 0.002


class RunLoop:
    """An asyncio loop in a daemon thread of its own (the run loop, and the publisher's)."""

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


async def fairly(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """`stream`, handing the event loop over at least every YIELD_EVERY seconds.

    A fast model stream whose chunks are already buffered never suspends, so it would
    starve every other task on the worker's shared loop (other runs' streams, the event
    publisher): measured, the first token of a 2,000-token reply reached the client
    100 ms later without this."""
    last = time.monotonic()
    async for item in stream:
        now = time.monotonic()
        if now - last >= YIELD_EVERY:
            await asyncio.sleep(0)
            last = now
        yield item
