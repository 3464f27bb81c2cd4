"""The worker's shared run loop, and fairness between tasks on it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runs.engine.runloop import fairly, get_run_loop


def test_runs_from_several_threads_share_one_loop_and_get_their_own_results():
    """Ten threads' runs wait together on the one loop: each waits until all ten have
    started (a barrier on the loop, with a safety timeout that fails the test). Runs served
    one after another, or each on a loop of its own, would never see the others start."""
    loop_threads: list[str] = []
    started: list[int] = []
    all_started = asyncio.Event()

    async def job(n: int) -> int:
        loop_threads.append(threading.current_thread().name)
        started.append(n)
        if len(started) == 10:
            all_started.set()
        await asyncio.wait_for(all_started.wait(), 30)
        return n * 2

    results: dict[int, int] = {}

    def submit(n: int) -> None:
        results[n] = get_run_loop().run(job(n))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: n * 2 for n in range(10)}
    assert set(loop_threads) == {"run-loop"}
    assert sorted(started) == list(range(10))  # they waited together, not one after another


def test_an_exception_in_a_run_reaches_the_thread_that_submitted_it():
    async def boom() -> None:
        raise ValueError("node failed")

    with pytest.raises(ValueError, match="node failed"):
        get_run_loop().run(boom())


def test_a_stream_that_never_suspends_still_lets_other_tasks_run():
    """Checked by interleaving, not by a count derived from time: the other task must have
    run within every stretch of 25 chunks. Each chunk takes at least 0.2 ms to parse
    (time.sleep never returns early), so 25 chunks span at least 5 ms, more than twice
    YIELD_EVERY; a slower machine only makes the stretches longer. Without `fairly` the
    other task does not run at all until the stream ends."""

    async def greedy(n: int):  # chunks already buffered: no await ever suspends
        for i in range(n):
            time.sleep(0.0002)  # parsing a chunk
            yield i

    async def scenario(wrap) -> list[int]:
        """The other task's tick count as each of 250 chunks arrives."""
        ticks = 0

        async def other() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        seen: list[int] = [ticks]
        async for _ in wrap(greedy(250)):
            seen.append(ticks)
        task.cancel()
        return seen

    seen = asyncio.run(scenario(lambda stream: stream))
    assert len(seen) == 251 and seen[-1] == seen[0]  # the starvation `fairly` exists for

    seen = asyncio.run(scenario(fairly))
    assert len(seen) == 251
    stretches = [seen[i + 25] - seen[i] for i in range(0, 250, 25)]
    assert all(ran > 0 for ran in stretches), stretches  # the other task ran throughout
