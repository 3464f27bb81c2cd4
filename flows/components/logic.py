"""logic.router: sends its input to one of several outputs by keyword or regex rules."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from flows.components.base import (
    BuildEnv,
    Component,
    ComponentParams,
    ParamProblem,
    Port,
    RunContext,
)
from flows.components.patterns import PatternError, compile_keywords, compile_user_pattern
from flows.components.util import as_text

PORT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,31}$"
MAX_MATCH_CHARS = 20_000


class Rule(BaseModel):
    model_config = {"extra": "forbid", "strict": True, "frozen": True}

    output: str = Field(
        ..., pattern=PORT_PATTERN, description="The output port this rule routes to."
    )
    match: Literal["keyword", "regex"] = "keyword"
    pattern: str = Field(
        ...,
        min_length=1,
        max_length=200,
        description=(
            "Comma-separated keywords (， and 、 separate too), or a regex in RE2 syntax (no "
            "backreferences or lookaround; use \\p{L} or \\p{Han} for letters beyond ASCII)."
        ),
    )
    case_sensitive: bool = False


# Keywords are separated by commas, Chinese and Japanese ones included (，、).
KEYWORD_SEPARATORS = re.compile(r"[,，、]")


def rule_matches(rule: Rule, text: str) -> bool:
    if rule.match == "keyword":
        words = tuple(w.strip() for w in KEYWORD_SEPARATORS.split(rule.pattern) if w.strip())
        matcher = compile_keywords(words, case_sensitive=rule.case_sensitive)
        return matcher.search(text) is not None
    # Regex rules run on RE2 (linear time): see flows.components.patterns.
    return (
        compile_user_pattern(rule.pattern, case_sensitive=rule.case_sensitive).search(text)
        is not None
    )


class Router(Component["Router.Params"]):
    key = "logic.router"
    label = "Router"
    category = "Logic"
    description = (
        "Sends the input to the first rule's output that matches (comma-separated keywords, "
        "or a regex in RE2 syntax: no backreferences or lookaround), else to the default "
        "output. Nodes behind untaken outputs are skipped."
    )
    inputs = [Port("input", "any", label="Input")]
    outputs = [Port("default", "text", label="Default")]

    class Params(ComponentParams):
        rules: list[Rule] = Field(default_factory=list, max_length=20)
        default_output: str = Field("default", pattern=PORT_PATTERN)

    def ports_for(self, params: Router.Params | None) -> tuple[list[Port], list[Port]]:
        if params is None:
            return list(self.inputs), list(self.outputs)
        names: list[str] = []
        for rule in params.rules:
            if rule.output not in names:
                names.append(rule.output)
        if params.default_output not in names:
            names.append(params.default_output)
        return list(self.inputs), [Port(n, "text", label=n) for n in names]

    def check(self, params: Router.Params, env: BuildEnv) -> list[ParamProblem]:
        problems = []
        for i, rule in enumerate(params.rules):
            if rule.match != "regex":
                continue
            try:
                compile_user_pattern(rule.pattern, case_sensitive=rule.case_sensitive)
            except PatternError as exc:
                problems.append(
                    ParamProblem(f"rules.{i}.pattern", "invalid_regex", f"Rule {i + 1}: {exc}")
                )
        return problems

    async def execute(
        self, built: Any, params: Router.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        text = as_text(inputs.get("input"))
        probe = text[:MAX_MATCH_CHARS]
        for rule in params.rules:
            if rule_matches(rule, probe):
                return {rule.output: text}
        return {params.default_output: text}
