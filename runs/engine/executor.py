"""The executor: runs a flow version's nodes in dependency order, branches concurrently.

Called by the Celery task in a worker thread, which claims the run and builds the plan,
then runs it on the process's shared event loop (runs.engine.runloop): every node is a
task that waits for its upstream nodes, so independent branches overlap while they wait
on models and tools. Components see their run through a per-node `NodeContext`, which
appends to the run's `RunWriter` (runs.engine.writer). A node error becomes an `error`
event on that node and the run ends with status `error`; a cancel or a lost lease stops
the run between chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection

from flows.builder import GraphInvalid, build_plan
from flows.components.base import NodeError, RunCancelled
from flows.components.util import chunk_text, model_error, run_db
from flows.policy import ERROR_PORT, backoff_delay
from flows.subflows import MAX_DEPTH as MAX_SUBFLOW_DEPTH
from flows.subflows import child_version
from runs.approvals import ResumeState, ask_for_approval, requeue_if_decided, resume_state
from runs.budgets import Allowance, BudgetExceeded, tokens_left
from runs.engine.rerun import (
    RerunImpossible,
    node_data,
    outputs_of,
    recorded_for_rerun,
    recorded_outputs,
)
from runs.engine.runloop import fairly, get_run_loop
from runs.engine.sink import EventSink, get_sink
from runs.engine.writer import RunWriter
from runs.events import PROTOCOL_VERSION, event_type
from runs.finished import announce_finished
from runs.models import COMPLETED_STATUS, Run, RunStatus
from runs.selectors import node_outcomes
from runs.services import run_claim

log = logging.getLogger(__name__)
T = TypeVar("T")

# The run's `error` when its budget stopped it (the log's `budget_exceeded` says where).
BUDGET_EXCEEDED_ERROR = "budget_exceeded: the workspace's budget ran out during the run."

# The longest a stream waits for its first token to be written and sent.
DELIVERY_WAIT_SECONDS = 0.02


class PrefixedWriter:
    """A sub-flow's view of its run's writer: the same log and seq, every event of its
    nodes named `<parent node id>.<child node id>` (flows.subflows)."""

    def __init__(
        self, writer: RunWriter | PrefixedWriter, prefix: str, item: int | None = None
    ) -> None:
        self._writer = writer
        self.prefix = prefix
        self.item = item  # an iteration's item: its events say which

    def emit(self, event: str, node_id: str = "", payload: dict[str, Any] | None = None) -> None:
        if self.item is not None:
            payload = {**(payload or {}), "item": self.item}
        # A run-level event of the child (a planning error) belongs to its parent node.
        self._writer.emit(event, self.prefix + node_id if node_id else self.prefix[:-1], payload)

    @property
    def should_stop(self) -> bool:
        return self._writer.should_stop

    def on_stop(self, callback: Callable[[], object]) -> None:
        self._writer.on_stop(callback)

    def after_next_publish(self, callback: Callable[[], None]) -> None:
        self._writer.after_next_publish(callback)


class NodeContext:
    """What a component sees of its run (the contract: flows.components.base.RunContext)."""

    def __init__(
        self,
        writer: RunWriter | PrefixedWriter,
        run: Any,
        node_id: str,
        allowance: Allowance | None = None,
        depth: int = 0,
    ) -> None:
        self._writer = writer
        self._run = run
        self._depth = depth
        self._allowance = allowance or Allowance(None)
        self.node_id = node_id
        self.workspace_id = run.workspace_id
        self.run_id = run.pk
        self.session_id = run.session_id
        self._first_token_sent = False
        # The provider's reported usage of this node's model calls, summed (an agent
        # calls its model several times); None until a call reports any.
        self.usage: dict[str, Any] | None = None
        self._model_name = ""
        self.configured_model = ""
        self.streamed = 0  # chunks of text of the call streaming now (one token each)

    def emit(self, event: str, data: Any) -> None:
        if event_type(event).emitted_by != "component":
            raise ValueError(f"components cannot emit {event!r}")
        self._writer.emit(event, self.node_id, {"data": data})

    async def _child_plan(self, flow_id: int, version: int | None) -> Any:
        """The plan of another flow's version, to run inside this node (flows.subflows)."""
        if self._depth + 1 >= MAX_SUBFLOW_DEPTH:
            raise NodeError(f"Sub-flows are nested more than {MAX_SUBFLOW_DEPTH} deep.")
        workspace = self._run.workspace

        def prepare() -> Any:
            found = child_version(workspace, flow_id, version)
            if found is None:
                raise NodeError("The sub-flow has no such version in this workspace any more.")
            return build_plan(found.graph, workspace)  # its whitelist and credentials, now

        try:
            plan = await run_db(prepare)
        except GraphInvalid as exc:
            problems = "; ".join(p.message for p in exc.problems[:5])
            raise NodeError(f"The sub-flow can no longer run: {problems}") from exc
        if any(getattr(p.component, "pauses_for_approval", False) for p in plan.nodes.values()):
            raise NodeError("A sub-flow cannot ask for a human approval (yet).")
        return plan

    async def _run_child(
        self, plan: Any, prefix: str, values: dict[str, str], item: int | None = None
    ) -> dict[str, Any]:
        """Execute a child plan under `prefix`; its outputs, or NodeError / BudgetExceeded."""
        runner = PlanRunner(
            self._run,
            plan,
            PrefixedWriter(self._writer, prefix, item),
            allowance=self._allowance,
            inputs=values,
            depth=self._depth + 1,
        )
        await runner.execute()
        if runner.budget_exceeded:
            raise BudgetExceeded("The workspace's budget ran out in the sub-flow.")
        if runner.failed:
            where, why = runner.first_failure or ("", "")
            raise NodeError(
                f"The sub-flow failed at {where}: {why}" if where else "The sub-flow failed."
            )
        return runner.outputs()

    async def run_subflow(
        self, flow_id: int, version: int | None, values: dict[str, str]
    ) -> dict[str, Any]:
        """Run another flow's graph inside this run (flows.components.subflow): its nodes'
        events under this node's id, its chat inputs given `values`; its outputs by text
        output id. NodeError when it cannot run or one of its nodes failed."""
        plan = await self._child_plan(flow_id, version)
        return await self._run_child(plan, f"{self.node_id}.", values)

    async def run_iteration(
        self,
        flow_id: int,
        version: int | None,
        per_item: list[dict[str, str]],
        concurrency: int,
        on_error: str,
    ) -> tuple[list[dict[str, Any] | None], list[dict[str, Any]]]:
        """Run another flow once per item (flows.components.iterate), at most `concurrency`
        at once, item i's events named `<node>.<i>.<child>` and carrying `item`; after each
        item an `iteration_progress`. (outputs per item in order, errors). With `on_error`
        "fail" the first failure cancels the items still running and fails the node."""
        plan = await self._child_plan(flow_id, version)
        total = len(per_item)
        outputs: list[dict[str, Any] | None] = [None] * total
        errors: list[dict[str, Any]] = []
        gate = asyncio.Semaphore(concurrency)
        done = 0

        async def one(index: int) -> None:
            nonlocal done
            async with gate:
                self.check_cancelled()
                try:
                    outputs[index] = await self._run_child(
                        plan, f"{self.node_id}.{index}.", per_item[index], index
                    )
                except NodeError as exc:
                    if on_error == "fail":
                        raise NodeError(f"Item {index}: {exc}", exc.code) from exc
                    errors.append({"item": index, "message": str(exc)})
                done += 1
                # At most about 50 progress events per iteration, and always the last.
                if done == total or done % max(1, total // 50) == 0:
                    self._writer.emit(
                        "iteration_progress",
                        self.node_id,
                        {"data": {"done": done, "total": total, "failed": len(errors)}},
                    )

        tasks = [asyncio.create_task(one(i)) for i in range(total)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # a failure (or a cancel) stops the items still running
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        errors.sort(key=lambda e: e["item"])
        return outputs, errors

    async def run_loop(
        self,
        flow_id: int,
        version: int | None,
        first: dict[str, str],
        next_values: Callable[[dict[str, Any]], dict[str, str]],
        done: Callable[[dict[str, Any]], bool],
        most: int,
    ) -> tuple[dict[str, Any], int]:
        """Run another flow again and again (flows.components.loop): iteration k's events
        named `<node>.<k>.<child>` and carrying `item: k`, an `iteration_progress` after
        each; until `done(outputs)` or `most` iterations. (the last outputs, how many)."""
        plan = await self._child_plan(flow_id, version)
        values, outputs = first, {}
        for k in range(most):
            self.check_cancelled()
            outputs = await self._run_child(plan, f"{self.node_id}.{k}.", values, k)
            self._writer.emit(
                "iteration_progress",
                self.node_id,
                {"data": {"done": k + 1, "total": most, "failed": 0}},
            )
            if done(outputs):
                return outputs, k + 1
            values = next_values(outputs)
        return outputs, most

    def check_cancelled(self) -> None:  # called per chunk: keep it a flag check
        if self._writer.should_stop:
            raise RunCancelled("The run was cancelled.")

    async def model_stream(self, chunks: AsyncIterable[T]) -> AsyncIterator[T]:
        """`chunks` (a model's `astream`), each passed on as it arrives, with the run's
        streaming duties done here rather than by every component:

        - the shared loop is handed over every few ms (`fairly`): a fast model whose
          chunks are already buffered would otherwise hold up every run of the process;
        - the run's cancel (or lost lease) is checked before each chunk;
        - each chunk's text is emitted as `on_token` (coalesced by the writer);
        - after the node's first token, the stream waits (at most DELIVERY_WAIT_SECONDS)
          until it has been committed and published: the chunks that follow would
          otherwise keep the worker's CPU busy while it waits to be written (measured:
          10 ms of a run's time to first token);
        - a provider failure becomes a NodeError that does not echo the provider's
          message (which can quote the API key);
        - the run's budget: no call starts once it is spent, and a call stops (BudgetExceeded)
          when its streamed chunks, one token each, or its reported usage cross it.
        """
        if self._allowance.spent:
            # Before the first `anext`: the model's request has not been sent.
            raise BudgetExceeded("The workspace's budget is spent.")
        self.streamed = 0
        source = aiter(chunks)
        try:
            stream = fairly(source)
            while True:
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    return
                except (RunCancelled, NodeError):
                    raise
                except Exception as exc:
                    raise model_error(exc) from exc
                self.check_cancelled()
                self._count_usage(chunk)
                text = chunk_text(chunk)
                if text:
                    self.streamed += 1
                    if self._allowance.spend(1):
                        raise BudgetExceeded("The workspace's budget ran out during this call.")
                    self._writer.emit("on_token", self.node_id, {"data": text})
                    if not self._first_token_sent:
                        self._first_token_sent = True
                        # An iteration's items are many and no one waits on one's first
                        # token: they go on and ride with the next write.
                        if getattr(self._writer, "item", None) is None:
                            await self.deliver_now()
                yield chunk
        except BudgetExceeded:
            # Close the provider's stream now (not when collected): it stops generating.
            close = getattr(source, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
            raise

    def _count_usage(self, chunk: Any) -> None:
        """Add a chunk's `usage_metadata` (LangChain puts the provider's counts on one
        chunk of a stream, usually the last) to the node's usage. The model's name comes
        on another chunk (OpenAI: the one with `finish_reason`), so it is looked for on
        every chunk until found."""
        if not self._model_name:
            metadata = getattr(chunk, "response_metadata", None)
            if metadata:
                name = metadata.get("model_name") or metadata.get("model") or ""
                self._model_name = str(name)[:200]
                if self.usage is not None:
                    self.usage["model"] = self._model_name
        reported = getattr(chunk, "usage_metadata", None)
        if not reported:
            return
        usage = self.usage or {"input_tokens": 0, "output_tokens": 0, "model": ""}
        usage["input_tokens"] += int(reported.get("input_tokens") or 0)
        usage["output_tokens"] += int(reported.get("output_tokens") or 0)
        usage["model"] = self._model_name
        self.usage = usage
        # Reconcile: the provider's counts replace this call's chunk count.
        reported_total = int(reported.get("input_tokens") or 0) + int(
            reported.get("output_tokens") or 0
        )
        counted, self.streamed = self.streamed, 0
        if self._allowance.spend(reported_total - counted):
            raise BudgetExceeded("The workspace's budget ran out with this call.")

    def stopped_usage(self) -> dict[str, Any] | None:
        """What a node stopped by the budget used: its reported usage, plus the chunks the
        stopped call had streamed (estimated: the provider never reported them)."""
        if self.usage is None and not self.streamed:
            return None
        usage = dict(self.usage or {"input_tokens": 0, "output_tokens": 0, "model": ""})
        usage["output_tokens"] += self.streamed
        usage["model"] = usage["model"] or self._model_name or self.configured_model
        usage["estimated"] = bool(self.streamed)
        return usage

    async def deliver_now(self) -> None:
        """Wait until the writer's next batch has been published (bounded), so what this
        node emitted so far goes out before the node continues. The engine's, not the
        component contract: `model_stream` calls it after a node's first token."""
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


class PlanRunner:
    """Executes one plan's nodes as tasks on the running loop, writing to `writer`."""

    def __init__(
        self,
        run: Run,
        plan: Any,
        writer: RunWriter | PrefixedWriter,
        recorded: dict[str, dict[str, Any] | None] | None = None,
        allowance: Allowance | None = None,
        resume: ResumeState | None = None,
        inputs: dict[str, Any] | None = None,
        depth: int = 0,
    ) -> None:
        self.run = run
        # The chat inputs' values: the run's, or a sub-flow's (its parent node's inputs).
        self.input_values = run.inputs if inputs is None else inputs
        self.depth = depth
        self.allowance = allowance or Allowance(None)
        self.budget_exceeded = False
        self.plan = plan
        self.writer = writer
        # Re-run from a node: outputs taken from the original run's log instead of executing.
        self.recorded = recorded or {}
        self.results: dict[str, dict[str, Any] | None] = {}
        self.done = {node_id: asyncio.Event() for node_id in plan.order}
        self.failed = False
        # Human approval (runs.approvals): what a resumed run's nodes did before it paused,
        # the decisions it resumes with, and the approvals still waiting for one.
        self.resume = resume or ResumeState()
        # Nodes waiting for a decision now, and every node behind one: they do not run.
        self.waiting: set[str] = set()
        self.blocked: set[str] = set()
        # The first node that failed, and why (a sub-flow's node says it to its parent).
        self.first_failure: tuple[str, str] | None = None

    def _inputs_for(self, node_id: str) -> dict[str, Any] | None:
        """The node's inputs from upstream outputs; None when it must be skipped."""
        planned = self.plan.nodes[node_id]
        if node_id in self.plan.input_node_ids:
            return {"value": self.input_values.get(node_id, "")}
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
            if node_id in self.resume.done_before:
                # Finished before the run paused: its outputs, from the run's own log.
                self.results[node_id] = self.resume.done_before[node_id]
                return
            if any(e.source in self.blocked for e in self.plan.incoming.get(node_id, [])):
                self.blocked.add(node_id)  # behind an approval that is still waiting
                return
            if node_id in self.recorded:
                self._replay_recorded(node_id)
                return
            if planned.pinned is not None:
                self._pinned(planned)
                return
            inputs = self._inputs_for(node_id)
            if inputs is None:
                self.results[node_id] = None
                self.writer.emit("node_finished", node_id, {"data": None, "skipped": True})
                return
            if getattr(planned.component, "pauses_for_approval", False):
                await self._approval(node_id, planned, inputs)
                return
            self.writer.emit(
                "node_started", node_id, {"data": {"component": planned.component.key}}
            )
            started = time.monotonic()
            ctx = NodeContext(self.writer, self.run, node_id, self.allowance, self.depth)
            # The node's configured model names a call the budget cut off before the
            # provider said which model answered.
            ctx.configured_model = str(getattr(planned.params, "model", "") or "")[:200]
            finished = await self._attempts(planned, inputs, ctx)
            if finished is None:
                return  # failed or stopped: already in the log
            finished["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            if ctx.usage is not None:
                finished["usage"] = ctx.usage
            self.writer.emit("node_finished", node_id, finished)
        finally:
            self.done[node_id].set()

    async def _approval(self, node_id: str, planned: Any, inputs: dict[str, Any]) -> None:
        """An approval node: pause here until decided, or go on with the decision."""
        decision = self.resume.decisions.get(node_id)
        if decision is None:
            self.waiting.add(node_id)
            self.blocked.add(node_id)
            if node_id in self.resume.pending:
                return  # asked before this resume: still waiting
            self.writer.emit(
                "node_started", node_id, {"data": {"component": planned.component.key}}
            )
            # The row first (off the loop), then the event: whoever sees the question can
            # answer it at once.
            asked = await run_db(ask_for_approval, self.run, node_id, planned.params, inputs)
            self.writer.emit("waiting_for_approval", node_id, {"data": asked})
            return
        self.writer.emit("approval_decided", node_id, {"data": decision.event_data()})
        outputs = {decision.port: decision.value}
        self.results[node_id] = outputs
        self.writer.emit("node_finished", node_id, {"data": node_data(planned, outputs)})

    @property
    def paused(self) -> bool:
        """Whether the run stopped at an approval (nothing failed, something waits)."""
        return bool(self.waiting) and not self.failed

    async def _attempts(
        self, planned: Any, inputs: dict[str, Any], ctx: NodeContext
    ) -> dict[str, Any] | None:
        """Execute the node under its policy (flows.policy): attempts, each bounded by its
        timeout, with a `node_retry` and a backoff between them; then the outputs, the
        error port or the fallback. The `node_finished` payload so far, or None when the
        node failed (its `error` written) or the budget stopped it."""
        node_id, policy = planned.id, planned.policy
        for attempt in range(1, policy.attempts + 1):
            try:
                outputs = await self._attempt(planned, inputs, ctx) or {}
            except (RunCancelled, asyncio.CancelledError):
                raise
            except BudgetExceeded as exc:
                self._budget_exceeded(node_id, str(exc), ctx.stopped_usage())
                return None
            except NodeError as exc:
                message, code = str(exc), exc.code
            except Exception as exc:
                log.exception("node %s of run %s failed", node_id, self.run.pk)
                message, code = f"{type(exc).__name__}: {exc}"[:2000], "internal_error"
            else:
                self.results[node_id] = outputs
                finished: dict[str, Any] = {"data": node_data(planned, outputs)}
                if attempt > 1:
                    finished["attempts"] = attempt
                return finished
            if attempt < policy.attempts and code in policy.retry_on:
                delay = backoff_delay(policy, attempt)
                self.writer.emit(
                    "node_retry",
                    node_id,
                    {
                        "attempt": attempt + 1,
                        "of": policy.attempts,
                        "error": message,
                        "code": code,
                        "delay": round(delay, 3),
                    },
                )
                # A cancel cancels this task, so it ends the wait at once.
                await asyncio.sleep(delay)
                ctx.check_cancelled()
                continue
            return self._node_gave_up(planned, message, code, attempt)
        raise AssertionError("unreachable: the last attempt returns")  # pragma: no cover

    @staticmethod
    async def _attempt(planned: Any, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        """One execution of the node, bounded by its policy's timeout (class `timeout`)."""
        execution = planned.component.execute(planned.built, planned.params, inputs, ctx)
        timeout = planned.policy.timeout_seconds
        if timeout is None:
            return await execution
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await execution
        except TimeoutError:
            if not scope.expired():
                raise  # the component's own, not the node's timeout
            raise NodeError(
                f"The node did not finish within its timeout of {timeout:g} s.", "timeout"
            ) from None

    def _node_gave_up(
        self, planned: Any, message: str, code: str, attempts: int
    ) -> dict[str, Any] | None:
        """The node's last attempt failed: what its policy's `on_failure` says happens."""
        node_id, policy = planned.id, planned.policy
        # In jsonb's own key order (shorter keys first), so a re-run reading it back from
        # the log hands downstream nodes the very same text of it.
        failure = {"code": code, "message": message}
        if policy.on_failure == "stop":
            self._node_failed(node_id, message, code=code, attempts=attempts)
            return None
        if policy.on_failure == "error_port":
            outputs = {ERROR_PORT: failure}
        else:
            outputs = recorded_outputs(planned, policy.fallback)
        self.results[node_id] = outputs
        finished: dict[str, Any] = {
            "data": node_data(planned, outputs),
            "took": policy.on_failure,
            "failure": failure,
        }
        if attempts > 1:
            finished["attempts"] = attempts
        return finished

    def _replay_recorded(self, node_id: str) -> None:
        outputs = self.recorded[node_id]
        self.results[node_id] = outputs
        payload: dict[str, Any] = {"recorded_from": str(self.run.rerun_of_id)}
        if outputs is None:
            payload.update(data=None, skipped=True)
        else:
            payload["data"] = node_data(self.plan.nodes[node_id], outputs)
            if set(outputs) == {ERROR_PORT} and self.plan.nodes[node_id].policy.has_error_port:
                payload["took"] = "error_port"  # so a re-run of this re-run reads it so
        self.writer.emit("node_finished", node_id, payload)

    def _pinned(self, planned: Any) -> None:
        """A pinned node (flows.pinning): its output as the pinned run's log recorded it."""
        pinned = planned.pinned
        outputs = outputs_of(planned, pinned.finished) or {}
        self.results[planned.id] = outputs
        payload: dict[str, Any] = {
            "data": node_data(planned, outputs),
            "pinned_from": pinned.run_id,
        }
        if pinned.finished.get("took"):
            payload["took"] = pinned.finished["took"]
        self.writer.emit("node_finished", planned.id, payload)

    def _budget_exceeded(self, node_id: str, message: str, usage: dict | None) -> None:
        """The node stopped for the budget: one `budget_exceeded` per run (other nodes
        stopped by it only end), carrying what each stopped node had used."""
        self.failed = True
        self.results[node_id] = None
        payload: dict[str, Any] = {"message": message}
        if usage is not None:
            payload["usage"] = usage
        if not self.budget_exceeded or usage is not None:
            self.writer.emit("budget_exceeded", node_id, payload)
        self.budget_exceeded = True

    def _node_failed(
        self, node_id: str, message: str, *, code: str = "", attempts: int = 1
    ) -> None:
        self.failed = True
        self.first_failure = self.first_failure or (node_id, message)
        self.results[node_id] = None
        payload: dict[str, Any] = {"message": message}
        if code:
            payload["code"] = code
        if attempts > 1:
            payload["attempts"] = attempts
        self.writer.emit("error", node_id, payload)

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
        """The run's outputs: each output node's logged data (made storable by the writer)."""
        return {
            node_id: node_data(self.plan.nodes[node_id], self.results[node_id] or {})
            for node_id in self.plan.output_node_ids
            if self.results.get(node_id) is not None
        }


# Starting a run (the claim, validation, credentials, model clients) is blocking ORM and
# CPU work under the GIL. Done by many pool threads at once it finishes no sooner and
# starves the run loop, so every live stream stalls. Measured with 50 runs starting
# together: preparing them all at once delayed the tokens of the runs already streaming
# by 100-200 ms, and 50 concurrent claims (the plans already one at a time) still held
# the median token of the first half second at 70-120 ms, against 10-45 ms with the
# claims taking turns too. One run is started at a time per process: claim and plan in
# one turn, whose end hands the thread's database connection back to the pool. (With the
# claim and the plan in two turns, each thread held its connection while it waited for
# its second: 20 runs claimed and waiting took the whole pool, and the next claim and
# the sink waited 30 s for a connection.)
_starting = threading.Lock()


@dataclass
class _Start:
    """A run whose start is done: its writer, and the runner ready to execute, or why
    the run cannot execute (status, error)."""

    run: Run
    writer: RunWriter
    runner: PlanRunner | None = None
    failure: tuple[RunStatus, str] | None = None


def execute_queued_run(*, run_id: str, task_id: str, worker: str) -> None:
    """Claim a queued run and execute it. A run that is not queued (finished, or held by
    another delivery of the task) is left alone."""
    with _starting:
        run = run_claim(run_id=run_id, task_id=task_id, worker=worker)
        start = _start(run, get_sink()) if run is not None else None
        connection.close()  # this thread only waits from here on
    if start is not None:
        _execute(start)


def execute_claimed_run(run: Run, *, sink: EventSink | None = None) -> None:
    """Execute a run whose lease this worker holds; always ends with `completed`.
    `sink` is the process's own unless given (a test choosing a persistence strategy)."""
    with _starting:
        start = _start(run, sink or get_sink())
        connection.close()  # this thread only waits from here on
    _execute(start)


def _start(run: Run, sink: EventSink) -> _Start:
    """Open the run's log with `run_started` (or, after an approval, `run_resumed`) and
    plan it (call with `_starting` held)."""
    writer = sink.open(run)
    version = run.flow_version
    resume = resume_state(run) if run.last_seq else None
    if resume is not None:
        writer.emit("run_resumed", "", {"data": {"after": sorted(resume.decisions)}})
    else:
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
    try:
        plan = build_plan(version.graph, run.workspace)  # re-checks the whitelist, now
        if resume is not None:
            resume.read_outputs(plan)
        recorded = None
        if run.rerun_from_node:
            # The original may have been deleted since (rerun_of is then empty).
            original = node_outcomes(run.rerun_of) if run.rerun_of else {}
            recorded = recorded_for_rerun(plan, run.rerun_from_node, original)
    except GraphInvalid as exc:
        problems = "; ".join(p.message for p in exc.problems)[:1500]
        return _Start(
            run, writer, failure=(RunStatus.FAILED, f"The flow can no longer run: {problems}")
        )
    except RerunImpossible as exc:
        return _Start(run, writer, failure=(RunStatus.FAILED, str(exc)))
    except Exception as exc:
        log.exception("run %s failed to start", run.pk)
        return _Start(
            run, writer, failure=(RunStatus.FAILED, f"Internal error: {type(exc).__name__}")
        )
    allowance = Allowance(tokens_left(run.workspace_id, run.api_token_id))
    return _Start(run, writer, runner=PlanRunner(run, plan, writer, recorded, allowance, resume))


def _execute(start: _Start) -> None:
    """Run a started run on the run loop and write its end (from the pool thread)."""
    run, writer, runner = start.run, start.writer, start.runner
    status, error, outputs = RunStatus.SUCCEEDED, "", {}
    if runner is None:
        status, error = start.failure or (RunStatus.FAILED, "Internal error")
        writer.emit("error", "", {"message": error})
    else:
        limit = settings.FLOWDECK["RUN_TIME_LIMIT_SECONDS"]
        try:
            try:
                get_run_loop().run(asyncio.wait_for(runner.execute(), timeout=limit))
            finally:
                outputs = runner.outputs()
            if runner.paused:
                _pause(run, writer)
                return
            if runner.budget_exceeded:
                status, error = RunStatus.FAILED, BUDGET_EXCEEDED_ERROR
            elif runner.failed:
                status, error = RunStatus.FAILED, "A node failed."
        except RunCancelled:
            status = RunStatus.CANCELLED
        except TimeoutError:
            status = RunStatus.FAILED
            error = f"The run exceeded its time limit of {limit}s."
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
    if writer.done.wait(timeout=60) and not writer.fenced:
        announce_finished(str(run.pk))


def _pause(run: Run, writer: RunWriter) -> None:
    """End this execution of a run that waits for a decision: its log written, its status
    `waiting`, its lease given up; no `completed` (the run has not ended). A decision that
    came while it was still running queues it again at once."""
    writer.pause()
    if writer.done.wait(timeout=60) and not writer.fenced:
        requeue_if_decided(str(run.pk))
