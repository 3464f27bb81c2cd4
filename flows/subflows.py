"""Sub-flows: a flow used as a node of another (flows.components.subflow).

The node names a flow of the same workspace and a version of it (a number, or none: the
flow's published version), and carries the child's chat inputs and text outputs as its
ports (the editor fills them when a flow is picked; `check` holds them to the child).
At run time the child's graph runs inside the parent's run (runs.engine.executor,
NodeContext.run_subflow): same run, same log, same seq; each of its events names the
parent node's id and the child's (`summary.model`); its components pass the whitelist as
any node's do, when the child's plan is built.

A flow may not contain itself, directly or through others: refused when a version is
saved (`cycle_problems`); and nesting is bounded (MAX_DEPTH) when it runs.
"""

from __future__ import annotations

from typing import Any

from accounts.models import Workspace
from accounts.tenancy import scoped
from flows.models import FlowVersion

COMPONENTS = ("flow.subflow", "flow.iterate", "flow.loop")
MAX_DEPTH = 4


def child_version(workspace: Workspace, flow_id: int, number: int | None) -> FlowVersion | None:
    """The version a sub-flow node runs: the one it names, else the flow's published one."""
    versions = scoped(FlowVersion, workspace).filter(flow_id=flow_id, flow__deleted_at__isnull=True)
    if number is not None:
        return versions.filter(number=number, is_draft=False).first()
    # chat owns publishing (and depends on flows): imported when asked, not at load.
    from chat.models import Publication

    published = (
        scoped(Publication, workspace).filter(flow_id=flow_id).select_related("version").first()
    )
    return published.version if published is not None else None


def _nodes(graph: Any) -> list[dict[str, Any]]:
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    return [n for n in nodes or [] if isinstance(n, dict)]


def ports_of(graph: Any) -> tuple[list[str], list[str]]:
    """A child graph's chat input ids and text output ids, in its order."""
    nodes = _nodes(graph)
    inputs = [str(n.get("id")) for n in nodes if n.get("component") == "io.chat_input"]
    outputs = [str(n.get("id")) for n in nodes if n.get("component") == "io.text_output"]
    return inputs, outputs


def references(graph: Any) -> list[tuple[str, int, int | None]]:
    """(node id, flow id, version or None) of each sub-flow node of a graph."""
    found = []
    for node in _nodes(graph):
        raw = node.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        flow_id = params.get("flow")
        if node.get("component") in COMPONENTS and isinstance(flow_id, int):
            version = params.get("version")
            found.append(
                (str(node.get("id")), flow_id, version if isinstance(version, int) else None)
            )
    return found


def contains(workspace: Workspace, graph: Any, flow_id: int) -> str | None:
    """The id of the node of `graph` through which it contains flow `flow_id` (directly or
    through other sub-flows, at any version they run), or None."""
    for node_id, child, _version in references(graph):
        seen: set[int] = set()
        stack = [child]
        while stack:
            current = stack.pop()
            if current == flow_id:
                return node_id
            if current in seen:
                continue
            seen.add(current)
            # Any version of a flow may be pinned by someone: every saved one counts.
            for inner in scoped(FlowVersion, workspace).filter(flow_id=current, is_draft=False):
                stack.extend(ref for _, ref, _ in references(inner.graph))
    return None
