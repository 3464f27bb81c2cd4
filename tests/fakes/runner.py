"""Run a component or a whole ExecutionPlan in-process, recording what it emits.

Mirrors the runs executor's contract (flows/components/base.py): input nodes get
`{"value": text}`; a port missing from a node's outputs is not taken and nodes fed only by
it are skipped. It is no substitute for runs/executor.py, which has its own tests.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from flows.builder import ExecutionPlan
from flows.components.base import RunCancelled


class RecordingContext:
    """A RunContext that keeps every emitted event; can be told to cancel."""

    def __init__(self, workspace_id: int, *, session_id: str = "test-session", run_id: int = 1):
        self.workspace_id = workspace_id
        self.run_id = run_id
        self.session_id = session_id
        self.events: list[tuple[str, Any]] = []
        self.cancelled = threading.Event()
        self.delivered = 0  # deliver_now() calls
        self._lock = threading.Lock()

    def emit(self, event: str, data: Any) -> None:
        assert event in {"on_token", "on_tool_call", "on_tool_result", "on_retrieval"}, event
        with self._lock:
            self.events.append((event, data))

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise RunCancelled("cancelled")

    async def deliver_now(self) -> None:
        self.delivered += 1

    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    @property
    def tokens(self) -> str:
        return "".join(self.of("on_token"))


def run_plan(
    plan: ExecutionPlan, inputs: dict[str, str], *, workspace_id: int, session_id: str = "s1"
) -> tuple[dict[str, dict[str, Any] | None], dict[str, RecordingContext]]:
    """Execute `plan` level by level; (outputs per node or None if skipped, contexts)."""
    results: dict[str, dict[str, Any] | None] = {}
    contexts: dict[str, RecordingContext] = {}

    async def node(node_id: str) -> None:
        planned = plan.nodes[node_id]
        ctx = contexts[node_id] = RecordingContext(workspace_id, session_id=session_id)
        if node_id in plan.input_node_ids:
            values: dict[str, Any] = {"value": inputs.get(node_id, "")}
        else:
            values = {}
            multi = {p.name for p in planned.component.input_ports(planned.params) if p.multi}
            wanted = set()
            for edge in plan.incoming[node_id]:
                wanted.add(edge.target_port)
                produced = results.get(edge.source)
                if produced is None or edge.source_port not in produced:
                    continue
                value = produced[edge.source_port]
                if edge.target_port in multi:
                    values.setdefault(edge.target_port, []).append(value)
                else:
                    values[edge.target_port] = value
            if plan.incoming[node_id] and wanted - set(values):
                results[node_id] = None
                return
        results[node_id] = await planned.component.execute(
            planned.built, planned.params, values, ctx
        )

    async def main() -> None:
        for level in plan.levels:
            await asyncio.gather(*(node(n) for n in level))

    asyncio.run(main())
    return results, contexts


def run_component(component: Any, params: Any, built: Any, inputs: dict[str, Any], ctx: Any) -> Any:
    return asyncio.run(component.execute(built, params, inputs, ctx))
