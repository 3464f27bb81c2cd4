"""What a node's `node_finished` records, and which nodes a re-run from a node reuses.

A re-run "from a node" executes that node and everything downstream of it again; every
other node takes its output from the original run's log, and no model or tool is called
for it. The rule is one function, `recorded_for_rerun`, used twice: when the re-run is
requested (runs.services: refused at once if some node has nothing to reuse) and when it
executes (runs.engine.executor: the outputs it reuses).
"""

from __future__ import annotations

from typing import Any

from flows.policy import ERROR_PORT


class RerunImpossible(Exception):
    """The original run's log cannot stand in for some node; the message says which."""


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


def downstream_of(plan: Any, node_id: str) -> set[str]:
    """`node_id` and every node that depends on it."""
    found, stack = {node_id}, [node_id]
    while stack:
        for edge in plan.outgoing.get(stack.pop(), []):
            if edge.target not in found:
                found.add(edge.target)
                stack.append(edge.target)
    return found


def recorded_for_rerun(
    plan: Any, from_node: str, outcomes: dict[str, dict]
) -> dict[str, dict[str, Any] | None]:
    """The outputs every node outside `from_node`'s downstream reuses, from the original
    run's `outcomes` (runs.selectors.node_outcomes): {port: value}, or None for a node
    that was skipped. RerunImpossible if `from_node` is not in the plan or some node has
    no recorded output (it failed, or never ran)."""
    if from_node not in plan.nodes:
        raise RerunImpossible("That node is not in the run's flow version.")
    fresh = downstream_of(plan, from_node)
    missing = [
        n for n in plan.order if n not in fresh and (n not in outcomes or outcomes[n].get("error"))
    ]
    if missing:
        raise RerunImpossible(
            "These nodes have no recorded output to reuse: " + ", ".join(missing[:10])
        )
    return {
        node_id: outputs_of(plan.nodes[node_id], outcomes[node_id])
        for node_id in plan.order
        if node_id not in fresh
    }


def outputs_of(planned: Any, finished: dict[str, Any]) -> dict[str, Any] | None:
    """A node's {port: value} from its logged `node_finished` payload: None when it was
    skipped; only its `error` port when it took that (flows.policy), whatever its other
    ports are called; else the inverse of `node_data` (a fallback's too)."""
    if finished.get("skipped"):
        return None
    data = finished.get("data")
    if finished.get("took") == "error_port":
        return {ERROR_PORT: data.get(ERROR_PORT) if isinstance(data, dict) else data}
    return recorded_outputs(planned, data)
