"""CPU-bound work of components runs in a small pool of processes, each task time-limited.

A worker process holds every run on one asyncio loop (`runs.engine.runloop`), so a
component that computes for a second freezes every run of every tenant on that worker. A thread does not
help: C code such as big-integer arithmetic or `json.loads` keeps the GIL for as long as it
runs. Work whose cost depends on what a user typed or a model answered therefore goes to
`cpu_bound`: a pebble process pool (forkserver children, so no thread state of the
worker is copied) whose task is killed, and its process replaced, when it exceeds its
time limit. Functions sent here are plain module-level functions without Django.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from pebble import ProcessPool
from pebble.common import ProcessExpired

T = TypeVar("T")

WORKERS = 2
TIME_LIMIT_SECONDS = 2.0
# Tasks a child runs before it is replaced, so a leak in a parser cannot grow a child forever.
TASKS_PER_CHILD = 1_000

_pool: ProcessPool | None = None
_lock = threading.Lock()


class CpuLimitExceeded(RuntimeError):
    """The task ran past its time limit (and was killed) or its process died."""


def _get_pool() -> ProcessPool:
    global _pool
    with _lock:
        if _pool is None or not _pool.active:
            _pool = ProcessPool(
                max_workers=WORKERS,
                max_tasks=TASKS_PER_CHILD,
                context=multiprocessing.get_context("forkserver"),
            )
        return _pool


async def cpu_bound(fn: Callable[..., T], *args: Any, timeout: float = TIME_LIMIT_SECONDS) -> T:
    """`fn(*args)` computed in the CPU pool without blocking the event loop; the task is
    killed after `timeout` seconds (CpuLimitExceeded). Exceptions of `fn` propagate."""
    future = _get_pool().schedule(fn, args=args, timeout=timeout)
    try:
        return await asyncio.wrap_future(future)
    except FutureTimeout as exc:
        raise CpuLimitExceeded(f"The computation took longer than {timeout:g} s.") from exc
    except ProcessExpired as exc:
        raise CpuLimitExceeded("The computation ran out of resources.") from exc
    except asyncio.CancelledError:
        future.cancel()  # pebble kills the child running a cancelled task
        raise


def shutdown() -> None:
    """Stop the pool's processes (tests, worker shutdown)."""
    global _pool
    with _lock:
        if _pool is not None:
            _pool.stop()
            _pool.join(timeout=5)
            _pool = None
