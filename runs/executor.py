"""The executor: runs a flow version's nodes in dependency order, branches concurrently.

Called by the Celery task in a worker thread, which builds the plan and then runs it on
the process's shared event loop (runs/runloop.py): every node is a task that waits for its
upstream nodes, so independent branches overlap while they wait on models and tools.
Components stream through a per-node `NodeContext` into the run's `RunWriter` (see
sink.py). A node error becomes an `error` event on that node and the run
ends with status `error`; a cancel or a lost lease stops the run between chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection

from flows.components.base import STREAM_EVENTS, NodeError, RunCancelled
from runs.events import PROTOCOL_VERSION, clean_text
from runs.models import COMPLETED_STATUS, Run, RunStatus
from runs.runloop import get_run_loop
from runs.services import run_claim
from runs.sink import RunWriter, get_sink

log = logging.getLogger(__name__)

MAX_VALUE_CHARS = 200_000
# The longest a stream waits in `deliver_now` for its first token to be written and sent.
DELIVERY_WAIT_SECONDS = 0.02


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of a node's output for events and run outputs."""
    if depth > 20:
        return "…"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON (and PostgreSQL's jsonb) has no NaN or Infinity
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        value = clean_text(value)
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v, depth + 1) for v in value]
    content = getattr(value, "content", None)
    if isinstance(content, str | list):  # a LangChain message
        return to_jsonable(content, depth + 1)
    page_content = getattr(value, "page_content", None)
    if isinstance(page_content, str):  # a LangChain Document
        return {"page_content": page_content, "metadata": to_jsonable(value.metadata, depth + 1)}
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(), depth + 1)
    return to_jsonable(str(value), depth + 1)


class NodeContext:
    """What a component sees of the run (flows.components.base.RunContext)."""

    def __init__(self, writer: RunWriter, run: Run, node_id: str) -> None:
        self._writer = writer
        self.node_id = node_id
        self.workspace_id = run.workspace_id
        self.run_id = run.pk
        self.session_id = run.session_id

    def emit(self, event: str, data: Any) -> None:
        if event not in STREAM_EVENTS:
            raise ValueError(f"components cannot emit {event!r}")
        payload = {"data": clean_text(str(data)) if event == "on_token" else to_jsonable(data)}
        self._writer.emit(event, self.node_id, payload)

    def check_cancelled(self) -> None:  # called per chunk: keep it a flag check
        if self._writer.should_stop:
            raise RunCancelled("The run was cancelled.")

    async def deliver_now(self) -> None:
        loop = asyncio.get_running_loop()
        delivered = loop.create_future()

        def published() -> None:  # on the publisher's thread
            with contextlib.suppress(RuntimeError):  # this loop has closed meanwhile
                loop.call_soon_threadsafe(_resolve, delivered)

        self._writer.after_next_publish(published)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(delivered, DELIVERY_WAIT_SECONDS)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def node_data(planned: Any, outputs: dict[str, Any]) -> Any:
    """A node's outputs as logged in `node_finished`: the bare value for a component with
    one output port, else the {port: value} map (so `recorded_outputs` can invert it)."""
    ports = planned.component.output_ports(planned.params)
    if len(ports) == 1 and set(outputs) <= {ports[0].name}:
        return outputs.get(ports[0].name)
    return outputs


def recorded_outputs(planned: Any, data: Any) -> dict[str, Any]:
    """Invert `node_data`: the {port: value} map from a logged `node_finished` payload."""
    ports = planned.component.output_ports(planned.params)
    if len(ports) == 1 and not (isinstance(data, dict) and set(data) <= {p.name for p in ports}):
        return {ports[0].name: data}
    return dict(data) if isinstance(data, dict) else {}


class PlanRunner:
    def __init__(
        self,
        run: Run,
        plan: Any,
        writer: RunWriter,
        recorded: dict[str, dict[str, Any] | None] | None = None,
    ) -> None:
        self.run = run
        self.plan = plan
        self.writer = writer
        # Re-run from a node: outputs taken from the original run's log instead of executing.
        self.recorded = recorded or {}
        self.results: dict[str, dict[str, Any] | None] = {}
        self.done = {node_id: asyncio.Event() for node_id in plan.order}
        self.failed = False

    def _inputs_for(self, node_id: str) -> dict[str, Any] | None:
        """The node's inputs from upstream outputs; None when it must be skipped."""
        planned = self.plan.nodes[node_id]
        if node_id in self.plan.input_node_ids:
            return {"value": self.run.inputs.get(node_id, "")}
        edges = self.plan.incoming.get(node_id, [])
        multi = {p.name for p in planned.component.input_ports(planned.params) if p.multi}
        values: dict[str, Any] = {}
        wanted = set()
        for edge in edges:
            wanted.add(edge.target_port)
            produced = self.results.get(edge.source)
            if produced is None or edge.source_port not in produced:
                continue
            value = produced[edge.source_port]
            if edge.target_port in multi:
                values.setdefault(edge.target_port, []).append(value)
            else:
                values[edge.target_port] = value
        if edges and wanted - set(values):
            return None  # an upstream branch was not taken, failed or skipped
        return values

    async def run_node(self, node_id: str) -> None:
        planned = self.plan.nodes[node_id]
        try:
            for edge in self.plan.incoming.get(node_id, []):
                await self.done[edge.source].wait()
            if node_id in self.recorded:
                self._replay_recorded(node_id)
                return
            inputs = self._inputs_for(node_id)
            if inputs is None:
                self.results[node_id] = None
                self.writer.emit("node_finished", node_id, {"data": None, "skipped": True})
                return
            self.writer.emit(
                "node_started", node_id, {"data": {"component": planned.component.key}}
            )
            started = time.monotonic()
            ctx = NodeContext(self.writer, self.run, node_id)
            try:
                outputs = await planned.component.execute(
                    planned.built, planned.params, inputs, ctx
                )
            except (RunCancelled, asyncio.CancelledError):
                raise
            except NodeError as exc:
                self._node_failed(node_id, str(exc))
                return
            except Exception as exc:
                log.exception("node %s of run %s failed", node_id, self.run.pk)
                self._node_failed(node_id, f"{type(exc).__name__}: {exc}"[:2000])
                return
            outputs = outputs or {}
            self.results[node_id] = outputs
            self.writer.emit(
                "node_finished",
                node_id,
                {
                    "data": to_jsonable(node_data(planned, outputs)),
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        finally:
            self.done[node_id].set()

    def _replay_recorded(self, node_id: str) -> None:
        outputs = self.recorded[node_id]
        self.results[node_id] = outputs
        payload: dict[str, Any] = {"recorded_from": str(self.run.rerun_of_id)}
        if outputs is None:
            payload.update(data=None, skipped=True)
        else:
            payload["data"] = to_jsonable(node_data(self.plan.nodes[node_id], outputs))
        self.writer.emit("node_finished", node_id, payload)

    def _node_failed(self, node_id: str, message: str) -> None:
        self.failed = True
        self.results[node_id] = None
        self.writer.emit("error", node_id, {"message": message})

    async def execute(self) -> None:
        tasks = [asyncio.create_task(self.run_node(n), name=n) for n in self.plan.order]
        loop = asyncio.get_running_loop()

        def cancel_all() -> None:
            for task in tasks:
                task.cancel()

        # A cancel or a lost lease (noticed by the sink thread) cancels every node at once,
        # even one waiting on a model; components also check between chunks.
        self.writer.on_stop(lambda: loop.call_soon_threadsafe(cancel_all))
        results = await asyncio.gather(*tasks, return_exceptions=True)

        for result in results:
            if isinstance(result, RunCancelled | asyncio.CancelledError):
                raise RunCancelled("cancelled")
            if isinstance(result, BaseException):
                raise result

    def outputs(self) -> dict[str, Any]:
        return {
            node_id: to_jsonable(node_data(self.plan.nodes[node_id], self.results[node_id] or {}))
            for node_id in self.plan.output_node_ids
            if self.results.get(node_id) is not None
        }


def downstream_of(plan: Any, node_id: str) -> set[str]:
    """`node_id` and every node that depends on it."""
    found, stack = {node_id}, [node_id]
    while stack:
        for edge in plan.outgoing.get(stack.pop(), []):
            if edge.target not in found:
                found.add(edge.target)
                stack.append(edge.target)
    return found


def recorded_for_rerun(run: Run, plan: Any) -> dict[str, dict[str, Any] | None]:
    """Outputs of every node outside `run.rerun_from_node`'s downstream, from the original
    run's log (no model or tool is called for them)."""
    from runs.selectors import node_outcomes

    fresh = downstream_of(plan, run.rerun_from_node)
    outcomes = node_outcomes(run.rerun_of)
    recorded: dict[str, dict[str, Any] | None] = {}
    for node_id in plan.order:
        if node_id in fresh:
            continue
        outcome = outcomes.get(node_id)
        if outcome is None or outcome.get("error"):
            raise RerunImpossible(f"Node {node_id} has no recorded output in the original run.")
        recorded[node_id] = (
            None
            if outcome.get("skipped")
            else recorded_outputs(plan.nodes[node_id], outcome["data"])
        )
    return recorded


class RerunImpossible(Exception):
    pass


# Starting a run (the claim, validation, credentials, model clients) is blocking ORM and
# CPU work under the GIL. Done by many pool threads at once it finishes no sooner and
# starves the run loop, so every live stream stalls. Measured with 50 runs starting
# together: preparing them all at once delayed the tokens of the runs already streaming
# by 100-200 ms, and 50 concurrent claims (the plans already one at a time) still held
# the median token of the first half second at 70-120 ms, against 10-45 ms with the
# claims taking turns too. One run is started at a time per process.
_starting = threading.Lock()


def execute_queued_run(*, run_id: str, task_id: str, worker: str) -> None:
    """Claim a queued run and execute it. A run that is not queued (finished, or held by
    another delivery of the task) is left alone."""
    with _starting:
        run = run_claim(run_id=run_id, task_id=task_id, worker=worker)
    if run is not None:
        execute_claimed_run(run)


def execute_claimed_run(run: Run) -> None:
    """Execute a run whose lease this worker holds; always ends with `completed`."""
    from flows.builder import GraphInvalid, build_plan

    writer = get_sink().open(run)
    version = run.flow_version
    writer.emit(
        "run_started",
        "",
        {
            "data": {
                "flow": run.flow_id,
                "version": version.number,
                "inputs": run.inputs,
                "protocol": PROTOCOL_VERSION,
            }
        },
    )
    status, error, outputs = RunStatus.SUCCEEDED, "", {}
    try:
        with _starting:
            plan = build_plan(version.graph, run.workspace)  # re-checks the whitelist, now
            recorded = recorded_for_rerun(run, plan) if run.rerun_from_node else None
        runner = PlanRunner(run, plan, writer, recorded)
        # This thread only waits from here on: its database connection goes back to the
        # pool instead of being held for the length of the run.
        connection.close()
        limit = settings.FLOWDECK["RUN_TIME_LIMIT_SECONDS"]
        try:
            get_run_loop().run(asyncio.wait_for(runner.execute(), timeout=limit))
        finally:
            outputs = runner.outputs()
        if runner.failed:
            status, error = RunStatus.FAILED, "A node failed."
    except GraphInvalid as exc:
        status = RunStatus.FAILED
        error = "The flow can no longer run: " + "; ".join(p.message for p in exc.problems)[:1500]
        writer.emit("error", "", {"message": error})
    except RunCancelled:
        status = RunStatus.CANCELLED
    except RerunImpossible as exc:
        status, error = RunStatus.FAILED, str(exc)
        writer.emit("error", "", {"message": error})
    except TimeoutError:
        status = RunStatus.FAILED
        error = (
            f"The run exceeded its time limit of {settings.FLOWDECK['RUN_TIME_LIMIT_SECONDS']}s."
        )
        writer.emit("error", "", {"message": error})
    except Exception as exc:
        log.exception("run %s failed", run.pk)
        status, error = RunStatus.FAILED, f"Internal error: {type(exc).__name__}"
        writer.emit("error", "", {"message": error})
    if writer.fenced:
        return  # the lease was taken: whoever took it ends the run
    writer.finish(
        status=status, completed_status=COMPLETED_STATUS[status], outputs=outputs, error=error
    )
    writer.done.wait(timeout=60)
