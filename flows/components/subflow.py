"""flow.subflow: another flow of the workspace as one node (flows.subflows)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from flows.components.base import (
    BuildEnv,
    Component,
    ComponentParams,
    NodeError,
    ParamProblem,
    Port,
    RunContext,
)
from flows.subflows import child_version, ports_of

PORT_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class SubFlow(Component["SubFlow.Params"]):
    key = "flow.subflow"
    label = "Sub-flow"
    category = "Flows"
    description = (
        "Runs another flow of this workspace inside this run: its chat inputs are this "
        "node's inputs, its text outputs this node's outputs. Pinned to a version, or the "
        "flow's published version. Its steps appear under this node in the run."
    )
    runs_subflow = True

    class Params(ComponentParams):
        flow: int = Field(
            ...,
            ge=1,
            le=2**63 - 1,
            description="The flow to run.",
            json_schema_extra={"x-widget": "flow"},
        )
        version: int | None = Field(
            None, ge=1, le=2**31 - 1, description="Its version (empty: the published one)."
        )
        inputs: list[str] = Field(
            default_factory=list, max_length=20, description="Its chat inputs (set by the editor)."
        )
        outputs: list[str] = Field(
            default_factory=list, max_length=20, description="Its text outputs (set by the editor)."
        )

    def ports_for(self, params: SubFlow.Params | None) -> tuple[list[Port], list[Port]]:
        if params is None:
            return [], []
        return (
            [Port(name, "text", label=name) for name in params.inputs],
            [Port(name, "text", label=name) for name in params.outputs],
        )

    def check(self, params: SubFlow.Params, env: BuildEnv) -> list[ParamProblem]:
        version = child_version(env.workspace, params.flow, params.version)
        if version is None:
            which = f"version {params.version}" if params.version else "a published version"
            return [
                ParamProblem(
                    "flow",
                    "subflow_missing",
                    f"The sub-flow (flow {params.flow}) has no {which} in this workspace.",
                )
            ]
        inputs, outputs = ports_of(version.graph)
        if (inputs, outputs) != (params.inputs, params.outputs):
            return [
                ParamProblem(
                    "flow",
                    "subflow_changed",
                    "The sub-flow's inputs or outputs are not what this node says: pick the "
                    f"flow again (it has inputs {inputs or 'none'} and outputs {outputs or 'none'}).",
                )
            ]
        bad = [name for name in inputs + outputs if not re.match(PORT_NAME, name)]
        if bad:
            return [
                ParamProblem(
                    "flow",
                    "subflow_ports",
                    f"The sub-flow's node ids {bad} cannot be port names: rename them "
                    "(letters, digits and _).",
                )
            ]
        return []

    async def execute(
        self, built: Any, params: SubFlow.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        run_subflow = getattr(ctx, "run_subflow", None)
        if run_subflow is None:
            raise NodeError("A sub-flow runs only inside a run.")
        values = {name: inputs.get(name, "") for name in params.inputs}
        outputs: dict[str, Any] = await run_subflow(params.flow, params.version, values)
        return {name: outputs[name] for name in params.outputs if name in outputs}
