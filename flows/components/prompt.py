"""prompt.template: f-string templates whose variables become the node's input ports.

Only plain `{name}` placeholders are allowed. Attribute or index access (`{x.__class__}`,
`{x[0]}`), positional fields (`{0}`, `{}`), conversions and format specs (`{x!r}`,
`{x:{y.__globals__}}`) and other template syntaxes (jinja2 `{% %}`/`{{ x }}`, mustache)
are refused at validation and checked again right before formatting (CVE-2025-65106 and
its format-time bypass). Values are converted to plain strings before formatting, so no
object's attributes are ever reachable from a template.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Any

from langchain_core.prompts import PromptTemplate
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
from flows.components.patterns import compile_trusted
from flows.components.util import as_text

VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# `{{ name }}` / `{{#section}}` / `{% tag %}` / `{# comment #}`: jinja2 and mustache syntax.
# On RE2: `\s*[...]?\s*` backtracks quadratically on `{{` and 20,000 spaces in `re`.
OTHER_SYNTAX_RE = compile_trusted(r"\{\{\s*[#/^!>&{]?\s*[A-Za-z_.][\w.]*\s*\}?\}\}|\{%|\{#")
MAX_VARIABLES = 32


class TemplateRejected(ValueError):
    pass


def template_variables(template: str) -> list[str]:
    """The template's variables in order of first use; TemplateRejected if it is not a plain
    f-string template with `{name}` placeholders only."""
    return list(_template_variables(template))


@lru_cache(maxsize=256)  # validation asks for each node's ports and problems: parse once
def _template_variables(template: str) -> tuple[str, ...]:
    if OTHER_SYNTAX_RE.search(template):
        raise TemplateRejected(
            "Only f-string templates with {name} placeholders are allowed "
            "(jinja2 and mustache syntax are not)."
        )
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateRejected(f"The template is malformed: {exc}.") from exc
    names: list[str] = []
    for _literal, field_name, format_spec, conversion in parsed:
        if field_name is None:
            continue
        if not VARIABLE_RE.match(field_name):
            shown = field_name[:40] or "{}"
            raise TemplateRejected(
                f"Placeholder {{{shown}}} is not allowed: use plain names like {{question}} "
                "(no attribute or index access, no positional fields)."
            )
        if format_spec or conversion:
            raise TemplateRejected(
                f"Placeholder {{{field_name}}} may not have a conversion or format spec."
            )
        if field_name not in names:
            names.append(field_name)
    if len(names) > MAX_VARIABLES:
        raise TemplateRejected(f"A template may use at most {MAX_VARIABLES} variables.")
    return tuple(names)


def safe_format(template: str, values: dict[str, Any]) -> str:
    """Format `template` with `values` as plain strings, re-checking the placeholders now."""
    names = template_variables(template)
    return PromptTemplate(
        template=template, input_variables=names, template_format="f-string"
    ).format(**{name: as_text(values.get(name, "")) for name in names})


class PromptTemplateComponent(Component["PromptTemplateComponent.Params"]):
    key = "prompt.template"
    label = "Prompt template"
    category = "Prompts"
    description = "Fills {placeholders} in a text template; each placeholder is an input."
    inputs = []
    outputs = [Port("prompt", "text", label="Prompt")]

    class Params(ComponentParams):
        template: str = Field(
            "{input}",
            min_length=1,
            max_length=20_000,
            description="f-string template; {name} placeholders become input ports.",
            json_schema_extra={"x-widget": "textarea"},
        )

    def ports_for(
        self, params: PromptTemplateComponent.Params | None
    ) -> tuple[list[Port], list[Port]]:
        if params is None:
            return [], list(self.outputs)
        try:
            names = template_variables(params.template)
        except TemplateRejected:
            names = []
        return [Port(n, "any", label=n) for n in names], list(self.outputs)

    def check(self, params: PromptTemplateComponent.Params, env: BuildEnv) -> list[ParamProblem]:
        try:
            template_variables(params.template)
        except TemplateRejected as exc:
            return [ParamProblem("template", "template_rejected", str(exc))]
        return []

    def build(self, params: PromptTemplateComponent.Params, env: BuildEnv) -> PromptTemplate:
        template = params.template
        return PromptTemplate(
            template=template,
            input_variables=template_variables(template),
            template_format="f-string",
        )

    async def execute(
        self,
        built: Any,
        params: PromptTemplateComponent.Params,
        inputs: dict[str, Any],
        ctx: RunContext,
    ) -> dict[str, Any]:
        template = params.template
        try:
            names = template_variables(template)
        except TemplateRejected as exc:
            raise NodeError(str(exc)) from exc
        if built is not None and built.template != template:
            raise NodeError("The template changed after it was validated.")
        values = {name: as_text(inputs.get(name, "")) for name in names}
        return {"prompt": safe_format(template, values)}
