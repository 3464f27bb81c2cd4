"""flow.loop: repeat a body flow until a condition on its output holds (issue 17, loop
until). Bounded: `max_iterations` is required. The first iteration gets the node's input;
each next one gets the previous iteration's output (so a body can fix its own answer). The
condition: the output parses as JSON, contains one of some keywords, matches an RE2 regex,
or a named text output of the body has a value (a router inside the body sending to a
"done" output). Each iteration's events are named `<node>.<k>.<body node>` and carry
`item: k`; the node logs `iteration_progress` after each.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from flows.components.base import (
    BuildEnv,
    Component,
    NodeError,
    ParamProblem,
    Port,
    RunContext,
)
from flows.components.iterate import BodyParams, body_problems, item_port
from flows.components.logic import KEYWORD_SEPARATORS
from flows.components.patterns import PatternError, compile_keywords, compile_user_pattern
from flows.components.util import as_text


class Loop(Component["Loop.Params"]):
    key = "flow.loop"
    label = "Loop until"
    category = "Flows"
    description = (
        "Runs another flow again and again, each time on the previous answer, until the "
        "answer passes a check (valid JSON, a keyword, a regex, or a named output of the "
        "flow has a value), at most `max_iterations` times."
    )
    loops = True

    class Params(BodyParams):
        max_iterations: int = Field(5, ge=1, le=50, description="Stop after this many.")
        until: Literal["json", "keyword", "regex", "output"] = Field(
            "json", description="What ends the loop."
        )
        pattern: str = Field(
            "",
            max_length=200,
            description="Keywords (comma-separated) or an RE2 regex, for `keyword` / `regex`.",
        )
        done_output: str = Field(
            "", max_length=64, description="For `output`: the body's output that means done."
        )

    def ports_for(self, params: Loop.Params | None) -> tuple[list[Port], list[Port]]:
        shared: list[Port] = []
        if params is not None:
            item = item_port(params)
            shared = [Port(n, "text", label=n) for n in params.inputs if n != item]
        return (
            [Port("input", "text", label="Input"), *shared],
            [
                Port("result", "text", label="Result"),
                Port("iterations", "json", label="Iterations"),
            ],
        )

    def check(self, params: Loop.Params, env: BuildEnv) -> list[ParamProblem]:
        problems = body_problems(params, env)
        if params.until in ("keyword", "regex") and not params.pattern.strip():
            problems.append(ParamProblem("pattern", "required", "Say what ends the loop."))
        if params.until == "regex" and params.pattern:
            try:
                compile_user_pattern(params.pattern)
            except PatternError as exc:
                problems.append(ParamProblem("pattern", "invalid_regex", str(exc)))
        if params.until == "output" and params.done_output not in params.outputs:
            problems.append(
                ParamProblem("done_output", "invalid_output", "Name one of the flow's outputs.")
            )
        return problems

    @staticmethod
    def done(params: Loop.Params, outputs: dict[str, Any]) -> bool:
        """Whether an iteration's outputs end the loop."""
        if params.until == "output":
            return outputs.get(params.done_output) not in (None, "")
        text = as_text(outputs.get(params.outputs[0]))
        if params.until == "json":
            try:
                json.loads(text)
            except ValueError:
                return False
            return True
        if params.until == "keyword":
            words = tuple(w.strip() for w in KEYWORD_SEPARATORS.split(params.pattern) if w.strip())
            return compile_keywords(words).search(text) is not None
        return compile_user_pattern(params.pattern).search(text) is not None

    async def execute(
        self, built: Any, params: Loop.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        run_loop = getattr(ctx, "run_loop", None)
        if run_loop is None:
            raise NodeError("A loop runs only inside a run.")
        port = str(item_port(params))
        shared = {n: as_text(inputs.get(n, "")) for n in params.inputs if n != port}
        first = {**shared, port: as_text(inputs.get("input", ""))}
        main = params.outputs[0]

        def next_values(outputs: dict[str, Any]) -> dict[str, str]:
            return {**shared, port: as_text(outputs.get(main))}

        last, count = await run_loop(
            params.flow,
            params.version,
            first,
            next_values,
            lambda outputs: self.done(params, outputs),
            params.max_iterations,
        )
        return {
            "result": as_text(last.get(main)),
            "iterations": {"count": count, "done": self.done(params, last)},
        }
