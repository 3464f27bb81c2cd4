"""Hostile inputs of one tenant must not stall the worker's shared run loop for the others.

Each case runs a hostile node (a user's backtracking regex, an arithmetic expression that
is seconds of C code, a huge template) beside a normal streaming run of another workspace
on the same run loop, while a probe on that loop records its longest stall. Before RE2 and
the CPU pool, `(a|a)*$` on 27 characters held the loop for 8 s and `round(5, -10**7)` for
5.6 s.

A stall is measured in CPU time, not on the clock: the probe wakes every 5 ms and keeps
the most CPU this process burned between two of its wake-ups. A loop can only fail to
wake while something of this process computes (on the loop's thread, or in another thread
holding the GIL), and that computation is exactly the CPU counted; a loaded machine that
deschedules the process makes the gaps long on the clock but burns no CPU in them, so it
cannot trip the check. Work sent to the CPU pool runs in child processes, which are not
counted. Garbage collection is paused while the probe runs, so a full collection of the
test process's heap is not taken for a stall. The defects burned seconds of CPU between
two wake-ups; normal scheduling burns a few milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import pytest
from langchain_core.documents import Document as LCDocument

from flows.components import cpu
from flows.components.calculator import CalculatorError, calculate
from flows.components.prompt import template_variables
from flows.components.registry import get_component
from runs import services
from runs.engine.executor import execute_claimed_run
from runs.engine.runloop import get_run_loop
from runs.models import Run, RunStatus
from tests import cpuhogs, flowgraphs
from tests.fakes.runner import RecordingContext
from tests.wsclient import stored_log

pytestmark = pytest.mark.django_db(transaction=True)

# The most CPU the process may burn while the loop cannot wake (normal: a few ms; the
# defects: seconds).
STALL_BOUND = 0.3
POS = {"position": {"x": 0, "y": 0}}


def _graph(hostile: dict[str, Any], in_port: str, out_port: str) -> dict[str, Any]:
    return {
        "nodes": [
            {**POS, "id": "input", "component": "io.chat_input", "params": {}},
            {**POS, "id": "hostile", **hostile},
            {**POS, "id": "output", "component": "io.text_output", "params": {}},
        ],
        "edges": [
            {"source": "input", "source_port": "text", "target": "hostile", "target_port": in_port},
            {
                "source": "hostile",
                "source_port": out_port,
                "target": "output",
                "target_port": "text",
            },
        ],
    }


def _queued(workspace, user, graph, text: str) -> Run:
    return flowgraphs.queued_run(workspace, user, graph, {"input": text})


def _execute(run: Run) -> None:
    execute_claimed_run(services.run_claim(run_id=str(run.pk), task_id=str(run.pk), worker="w"))


class LoopProbe:
    """Sleeps 5 ms at a time on the run loop and keeps the most CPU the process burned
    between two wake-ups (see the module docstring)."""

    def __init__(self) -> None:
        self.longest = 0.0  # CPU seconds
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve)

    async def _probe(self) -> None:
        last = time.process_time()
        while not self._stop.is_set():
            await asyncio.sleep(0.005)
            now = time.process_time()
            self.longest = max(self.longest, now - last)
            last = now
            self.samples += 1

    def _serve(self) -> None:
        get_run_loop().run(self._probe())

    def __enter__(self) -> LoopProbe:
        gc.collect()
        gc.disable()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        gc.enable()


def _beside_a_normal_run(normal: Run, hostile: Run) -> None:
    threads = [threading.Thread(target=_execute, args=(run,)) for run in (normal, hostile)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


HOSTILE = {
    "router (a|a)*$": (
        {
            "component": "logic.router",
            "params": {"rules": [{"output": "hit", "match": "regex", "pattern": "(a|a)*$"}]},
        },
        "input",
        "default",
        "a" * 27 + "!",
    ),
    "router ((a+))+$": (
        {
            "component": "logic.router",
            "params": {"rules": [{"output": "hit", "match": "regex", "pattern": "((a+))+$"}]},
        },
        "input",
        "default",
        "a" * 20_000 + "!",
    ),
    "router keywords on a long text": (
        {
            "component": "logic.router",
            "params": {
                "rules": [
                    {"output": f"r{i}", "match": "keyword", "pattern": "a" * 199 + "b"}
                    for i in range(20)
                ]
            },
        },
        "input",
        "default",
        "a" * 20_000,
    ),
    "calculator round(5, -10**7)": (
        {"component": "tool.calculator", "params": {}},
        "expression",
        "result",
        "round(5, -10**7)",
    ),
    "json parser on unclosed fences": (
        {"component": "parser.json", "params": {}},
        "text",
        "json",
        "```" * 300_000,
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_normal_run_of_another_workspace_keeps_streaming_while_a_hostile_input_runs(
    case, workspace_a, erin_editor, workspace_b, mallory_owner
):
    hostile_node, in_port, out_port, text = HOSTILE[case]
    reply = " ".join(f"t{i}" for i in range(40))
    normal = _queued(
        workspace_a, erin_editor, flowgraphs.demo_graph(reply=reply, delay_ms=10), "hi"
    )
    hostile = _queued(workspace_b, mallory_owner, _graph(hostile_node, in_port, out_port), text)
    with LoopProbe() as probe:
        _beside_a_normal_run(normal, hostile)
    assert probe.samples > 10
    assert probe.longest < STALL_BOUND, f"the run loop stalled for {probe.longest:.2f} s of CPU"
    normal.refresh_from_db()
    assert normal.status == RunStatus.SUCCEEDED
    tokens = "".join(e["data"] for e in stored_log(str(normal.pk)) if e["event"] == "on_token")
    assert tokens == reply
    hostile.refresh_from_db()
    assert hostile.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)  # it ended, either way


def test_the_hostile_calculator_expression_is_a_clear_node_error(workspace_b, mallory_owner):
    graph = _graph({"component": "tool.calculator", "params": {}}, "expression", "result")
    run = _queued(workspace_b, mallory_owner, graph, "round(5, -10**7)")
    _execute(run)
    errors = [e for e in stored_log(str(run.pk)) if e["event"] == "error"]
    assert errors and "round() takes at most" in errors[0]["message"]


def test_a_backtracking_regex_routes_correctly_on_re2(workspace_b, mallory_owner):
    node = {
        "component": "logic.router",
        "params": {"rules": [{"output": "hit", "match": "regex", "pattern": "^(a|a)*$"}]},
    }
    graph = _graph(node, "input", "hit")
    run = _queued(workspace_b, mallory_owner, graph, "a" * 5_000)
    _execute(run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"output": "a" * 5_000}


def test_round_digits_are_bounded_and_small_roundings_still_work():
    assert calculate("round(1234.5678, 2)") == 1234.57
    assert calculate("round(1234, -2)") == 1200
    with pytest.raises(CalculatorError, match="round"):
        calculate("round(5, -10**7)")


def test_a_template_check_is_linear_on_braces_and_spaces():
    """The backtracking check took 1.8 s of CPU on 20,000 spaces, quadratically: 10 times
    the spaces cost 100 times as much. Measured against a baseline in the same test, in
    this thread's CPU time (not inflated by a loaded machine): 20,000 spaces may cost at
    most 30 times what 2,000 cost. Each call gets a text of its own (results are cached)."""

    def cpu(spaces: int) -> float:
        costs = []
        for extra in range(3):
            text = "{{" + " " * (spaces + extra)
            before = time.thread_time()
            assert template_variables(text) == []
            costs.append(time.thread_time() - before)
        return min(costs)

    cpu(100)  # warm up
    small, large = cpu(2_000), cpu(20_000)
    assert large < 30 * small, (large, small)


async def test_the_cpu_pool_kills_a_task_past_its_time_limit_and_keeps_serving():
    with pytest.raises(cpu.CpuLimitExceeded):
        await cpu.cpu_bound(cpuhogs.spin_forever, timeout=0.3)
    assert await cpu.cpu_bound(cpuhogs.double, 21) == 42
    with pytest.raises(ValueError, match="boom"):
        await cpu.cpu_bound(cpuhogs.fail, "boom")


async def test_the_loop_stays_responsive_while_the_cpu_pool_computes():
    """The loop ticks twenty times while a child spins (a job that never ends by itself),
    then the job is cancelled, which kills the child. Counted, not timed: a cpu_bound that
    waited for its job on the loop's thread would hold the loop until the job's time limit
    (60 s), and the job would be over before the first tick."""
    job = asyncio.ensure_future(cpu.cpu_bound(cpuhogs.spin_forever, timeout=60))
    ticks = 0
    while ticks < 20:
        await asyncio.sleep(0.001)
        assert not job.done(), "the loop did not tick while the pool computed"
        ticks += 1
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert await cpu.cpu_bound(cpuhogs.double, 21) == 42  # the pool still serves


def test_ranking_a_large_corpus_does_not_hold_the_run_loop(workspace_a):
    component = get_component("retriever.bm25")
    params = component.Params(k=3)
    words = " ".join(f"term{i}" for i in range(800))
    docs = [
        LCDocument(page_content=f"doc {n} {words}", metadata={"title": f"d{n}"})
        for n in range(1500)
    ]
    ctx = RecordingContext(workspace_a.pk)

    async def rank() -> dict:
        return await component.execute(None, params, {"documents": docs, "query": "term7 doc"}, ctx)

    with LoopProbe() as probe:
        result = get_run_loop().run(rank())
    assert len(result["documents"]) == 3
    assert probe.longest < STALL_BOUND, f"the run loop stalled for {probe.longest:.2f} s of CPU"
