"""The worker's shared run loop, and fairness between tasks on it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runs.engine.runloop import YIELD_EVERY, fairly, get_run_loop


def test_runs_from_several_threads_share_one_loop_and_get_their_own_results():
    loop_threads: list[str] = []

    async def job(n: int) -> int:
        loop_threads.append(threading.current_thread().name)
        await asyncio.sleep(0.05)
        return n * 2

    results: dict[int, int] = {}

    def submit(n: int) -> None:
        results[n] = get_run_loop().run(job(n))

    started = time.monotonic()
    threads = [threading.Thread(target=submit, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: n * 2 for n in range(10)}
    assert set(loop_threads) == {"run-loop"}
    assert time.monotonic() - started < 0.5  # they waited together, not one after another


def test_an_exception_in_a_run_reaches_the_thread_that_submitted_it():
    async def boom() -> None:
        raise ValueError("node failed")

    with pytest.raises(ValueError, match="node failed"):
        get_run_loop().run(boom())


def test_a_stream_that_never_suspends_still_lets_other_tasks_run():
    async def greedy(n: int):  # chunks already buffered: no await ever suspends
        for i in range(n):
            time.sleep(0.0002)  # parsing a chunk
            yield i

    async def scenario(wrap) -> tuple[int, int]:
        ticks = 0

        async def other() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        before = ticks
        count = 0
        async for _ in wrap(greedy(250)):  # about 50 ms of chunks
            count += 1
        during = ticks - before
        task.cancel()
        return count, during

    count, during = asyncio.run(scenario(lambda stream: stream))
    assert count == 250 and during == 0  # the starvation `fairly` exists for

    count, during = asyncio.run(scenario(fairly))
    assert count == 250
    assert during >= 0.05 / YIELD_EVERY / 2  # the other task ran throughout
