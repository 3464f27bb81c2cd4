"""What changed between two flow graphs: the one reading of a version diff, shown by the
versions page, the editor's versions panel (through the API) and the admin."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# A parameter value is shown whole up to this many characters, then cut (a 100 kB prompt
# would otherwise fill the page twice).
SHOWN_CHARS = 300


@dataclass(frozen=True)
class ParamChange:
    # a parameter name, "policy.<field>" for the node's policy (flows.policy), "pinned"
    # (flows.pinning), or "component" when the node's component changed
    key: str
    before: str | None  # None: the key was not set
    after: str | None


@dataclass(frozen=True)
class NodeChange:
    node_id: str
    changes: list[ParamChange]

    @property
    def keys(self) -> list[str]:
        return [change.key for change in self.changes]


@dataclass(frozen=True)
class GraphDiff:
    added: list[str] = field(default_factory=list)  # node ids
    removed: list[str] = field(default_factory=list)
    changed: list[NodeChange] = field(default_factory=list)
    edges_added: list[str] = field(default_factory=list)  # "a.out → b.in"
    edges_removed: list[str] = field(default_factory=list)
    # node id -> component key, for every node named above (the later graph's, if in both)
    components: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (
            self.added or self.removed or self.changed or self.edges_added or self.edges_removed
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def shown(value: Any) -> str | None:
    """A parameter value as the diff shows it: JSON, cut to SHOWN_CHARS."""
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def _nodes(graph: Any) -> dict[str, dict[str, Any]]:
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    return {str(n.get("id")): n for n in nodes or [] if isinstance(n, dict)}


def _edges(graph: Any) -> set[str]:
    edges = graph.get("edges") if isinstance(graph, dict) else None
    return {
        f"{e.get('source')}.{e.get('source_port')} → {e.get('target')}.{e.get('target_port')}"
        for e in edges or []
        if isinstance(e, dict)
    }


def _node_changes(a: dict[str, Any], b: dict[str, Any]) -> list[ParamChange]:
    changes = []
    if a.get("component") != b.get("component"):
        changes.append(
            ParamChange("component", shown(a.get("component")), shown(b.get("component")))
        )
    if a.get("pinned") != b.get("pinned"):
        changes.append(ParamChange("pinned", shown(a.get("pinned")), shown(b.get("pinned"))))
    for part, prefix in (("params", ""), ("policy", "policy.")):
        pa, pb = _mapping(a.get(part)), _mapping(b.get(part))
        for key in sorted(set(pa) | set(pb), key=str):
            if pa.get(key) != pb.get(key):
                changes.append(
                    ParamChange(f"{prefix}{key}", shown(pa.get(key)), shown(pb.get(key)))
                )
    return changes


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def graph_diff(a: Any, b: Any) -> GraphDiff:
    """What changed from graph `a` to graph `b`: nodes added and removed, each kept node's
    component and parameter changes (old -> new), edges added and removed. Positions are
    layout, not a change."""
    na, nb = _nodes(a), _nodes(b)
    changed = []
    for node_id in sorted(set(na) & set(nb)):
        changes = _node_changes(na[node_id], nb[node_id])
        if changes:
            changed.append(NodeChange(node_id, changes))
    ea, eb = _edges(a), _edges(b)
    named = set(na) ^ set(nb) | {node.node_id for node in changed}
    return GraphDiff(
        added=sorted(set(nb) - set(na)),
        removed=sorted(set(na) - set(nb)),
        changed=changed,
        edges_added=sorted(eb - ea),
        edges_removed=sorted(ea - eb),
        components={
            node_id: str((nb.get(node_id) or na[node_id]).get("component"))
            for node_id in sorted(named)
        },
    )
