"""flow.iterate: run another flow once per item of a list (issue 17, iteration).

The body of the loop is a flow of its own (picked like a sub-flow: flows.subflows), so the
canvas stays a DAG and the body is edited, versioned and tested on its own canvas. Each
item runs the body inside the same run, with at most `concurrency` items at once; every
event of an item's nodes is named `<node>.<item index>.<body node>` and carries `item`;
the node logs `iteration_progress` after each item. `results` holds each item's output in
the items' order; one item's failure fails the node, unless `on_item_error` says to skip
it (its result is null) or to collect it (in `errors`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from flows.components.base import BuildEnv, Component, NodeError, ParamProblem, Port, RunContext
from flows.components.subflow import SubFlow

MAX_ITEMS = 1000


def items_of(value: Any) -> list[Any]:
    """A list input as items: a list as it is; text holding a JSON list, that list; other
    text, its non-empty lines."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        return [line.strip() for line in text.splitlines() if line.strip()]
    if value is None:
        return []
    raise NodeError("An iteration needs a list (or text, one item per line).")


class BodyParams(SubFlow.Params):
    """A body flow run many times (an iteration's items, a loop's answers)."""

    item_input: str | None = Field(
        None, max_length=64, description="The flow's input that gets each item (its first)."
    )


def item_port(params: BodyParams) -> str | None:
    """The body's input that gets the item: the one named, else its first."""
    if params.item_input:
        return params.item_input
    return params.inputs[0] if params.inputs else None


def body_problems(params: BodyParams, env: BuildEnv) -> list[ParamProblem]:
    """A sub-flow's problems, then: the item goes to one of its inputs, and it has an output."""
    problems = SubFlow().check(params, env)
    if not problems and item_port(params) not in params.inputs:
        problems.append(
            ParamProblem("item_input", "invalid_item_input", "Name one of the flow's inputs.")
        )
    if not problems and not params.outputs:
        problems.append(ParamProblem("flow", "subflow_ports", "The flow has no text output."))
    return problems


class Iterate(Component["Iterate.Params"]):
    key = "flow.iterate"
    label = "Iteration"
    category = "Flows"
    description = (
        "Runs another flow once per item of a list (a JSON list, or text with one item per "
        "line), several at once, and gives their outputs as a list in the items' order. "
        "The item goes to the flow's first chat input (or the one named); its other inputs "
        "are this node's inputs, the same for every item."
    )
    iterates = True

    class Params(BodyParams):
        concurrency: int = Field(4, ge=1, le=20, description="Items run at once.")
        max_items: int = Field(100, ge=1, le=MAX_ITEMS, description="Refuse longer lists.")
        on_item_error: Literal["fail", "skip", "collect"] = Field(
            "fail",
            description="An item that fails: fail the node, skip it (null result), or "
            "collect its error in `errors`.",
        )

    def ports_for(self, params: Iterate.Params | None) -> tuple[list[Port], list[Port]]:
        shared: list[Port] = []
        if params is not None:
            item = item_port(params)
            shared = [Port(n, "text", label=n) for n in params.inputs if n != item]
        return (
            [Port("items", "any", label="Items"), *shared],
            [Port("results", "any", label="Results"), Port("errors", "any", label="Errors")],
        )

    def check(self, params: Iterate.Params, env: BuildEnv) -> list[ParamProblem]:
        return body_problems(params, env)

    async def execute(
        self, built: Any, params: Iterate.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        run_iteration = getattr(ctx, "run_iteration", None)
        if run_iteration is None:
            raise NodeError("An iteration runs only inside a run.")
        items = items_of(inputs.get("items"))
        if len(items) > params.max_items:
            raise NodeError(
                f"{len(items)} items: this iteration takes at most {params.max_items} "
                "(raise max_items)."
            )
        port = str(item_port(params))
        shared = {n: inputs.get(n, "") for n in params.inputs if n != port}
        per_item = [
            {
                **shared,
                port: item if isinstance(item, str) else json.dumps(item, ensure_ascii=False),
            }
            for item in items
        ]
        outputs, errors = await run_iteration(
            params.flow, params.version, per_item, params.concurrency, params.on_item_error
        )
        name = params.outputs[0]
        results = [
            None if out is None else (out.get(name) if len(params.outputs) == 1 else out)
            for out in outputs
        ]
        return {"results": results, "errors": errors}
