"""parser.text and parser.json: turn a model's reply into plain text or JSON data."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.output_parsers import StrOutputParser
from pydantic import Field

from flows.components.base import BuildEnv, Component, ComponentParams, NodeError, Port, RunContext
from flows.components.compute import ComputeError, json_value
from flows.components.cpu import CpuLimitExceeded, cpu_bound
from flows.components.util import as_text

MAX_JSON_CHARS = 1_000_000
# Below this a parse takes well under a millisecond and stays on the loop; above it, the
# CPU pool (a megabyte of JSON holds the GIL for tens of milliseconds).
INLINE_JSON_CHARS = 20_000


class TextParser(Component["TextParser.Params"]):
    key = "parser.text"
    label = "Text parser"
    category = "Parsers"
    description = "Plain text from any value: whole, first or last line, trimmed and capped."
    inputs = [Port("input", "any", label="Input")]
    outputs = [Port("text", "text", label="Text")]

    class Params(ComponentParams):
        mode: Literal["full", "first_line", "last_line"] = "full"
        strip: bool = True
        max_chars: int = Field(100_000, ge=1, le=200_000)

    def build(self, params: TextParser.Params, env: BuildEnv) -> StrOutputParser:
        return StrOutputParser()

    async def execute(
        self, built: Any, params: TextParser.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        text = built.parse(as_text(inputs.get("input")))
        lines = [line for line in text.splitlines() if line.strip()]
        if params.mode == "first_line":
            text = lines[0] if lines else ""
        elif params.mode == "last_line":
            text = lines[-1] if lines else ""
        if params.strip:
            text = text.strip()
        return {"text": text[: params.max_chars]}


class JsonParser(Component["JsonParser.Params"]):
    key = "parser.json"
    label = "JSON parser"
    category = "Parsers"
    description = "Parses JSON from text (also inside ```json fences); optionally picks one key."
    inputs = [Port("text", "any", label="Text")]
    outputs = [Port("json", "json", label="JSON")]

    class Params(ComponentParams):
        key: str = Field("", max_length=100, description="Top-level key to output (optional).")

    def build(self, params: JsonParser.Params, env: BuildEnv) -> Any:
        return None  # strict json.loads: LangChain's JSON parser accepts partial JSON

    async def execute(
        self, built: Any, params: JsonParser.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        text = as_text(inputs.get("text"))
        if len(text) > MAX_JSON_CHARS:
            raise NodeError("The text is too long to parse as JSON.")
        try:
            if len(text) <= INLINE_JSON_CHARS:
                value = json_value(text)
            else:
                value = await cpu_bound(json_value, text)
        except (ComputeError, CpuLimitExceeded) as exc:
            raise NodeError(str(exc)) from exc
        key = params.key
        if key:
            if not isinstance(value, dict) or key not in value:
                raise NodeError(f"The JSON has no top-level key `{key}`.")
            value = value[key]
        return {"json": value}
