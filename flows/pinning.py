"""Pinning a node's output: while editing, a node can stand on the output it recorded in
an earlier run, so the nodes after it can be worked on without calling its model again.

A pinned node carries `"pinned": {"run": "<run id>"}` beside its params. Only the run id is
in the graph: the value is read from that run's log (its `node_finished`), never taken
from the graph, so a version cannot claim a value that run did not produce. The run must
be of the same workspace, the node must have finished in it (not failed, not skipped) as
the same component. Checked when the graph is validated (every save, and again when a run
starts); a run of the graph then writes the node's `node_finished` with that value and
`pinned_from: <run id>`, and neither executes the node nor waits on a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accounts.models import Workspace

PIN_KEYS = {"run"}


@dataclass(frozen=True)
class Pinned:
    """A pinned node's recorded output: the run it comes from and its `node_finished`."""

    run_id: str
    finished: dict[str, Any]


def pin_problems(
    raw: Any, workspace: Workspace, node_id: str, component_key: str
) -> tuple[Pinned | None, list[tuple[str, str, str]]]:
    """The node's pin from its graph's `pinned` value (None when absent), and its problems
    as (field, code, message)."""
    if raw is None:
        return None, []
    if not (isinstance(raw, dict) and set(raw) == PIN_KEYS and isinstance(raw["run"], str)):
        return None, [("pinned", "invalid_pin", "`pinned` is {\"run\": \"<run id>\"}.")]
    # Imported here: runs depends on flows (its models, the builder), not the other way.
    from runs.selectors import recorded_node

    recorded = recorded_node(workspace, raw["run"], node_id)
    short = raw["run"][:8]
    if recorded is None:
        return None, [
            (
                "pinned.run",
                "pin_unavailable",
                f"This node is pinned to run {short}…, which has no output of it in this "
                "workspace (the run is gone, or the node failed or was skipped there): unpin "
                "it, or pin it again after a run.",
            )
        ]
    if recorded.component != component_key:
        return None, [
            (
                "pinned.run",
                "pin_stale",
                f"This node was another component in run {short}…: unpin it, or pin it again "
                "after a run.",
            )
        ]
    return Pinned(run_id=recorded.run_id, finished=recorded.finished), []
