"""Whitelisted tools for agent.tools: calculator, http_get, doc_search.

Each tool node outputs a `tool` (for an agent's `tools` input) and, when its own input is
connected, also runs once and outputs the `result` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from flows.components.base import (
    BuildEnv,
    Component,
    ComponentParams,
    NodeError,
    P,
    ParamProblem,
    Port,
    RunContext,
)
from flows.components.calculator import CalculatorError, calculate
from flows.components.cpu import CpuLimitExceeded, cpu_bound
from flows.components.retrieval import (
    COLLECTION_PATTERN,
    KnowledgeRef,
    knowledge_base_field_schema,
    knowledge_base_problems,
)
from flows.components.safe_http import FetchRefused, safe_get
from flows.components.util import as_text, run_db


@dataclass(frozen=True)
class ToolHandle:
    """A built LangChain tool travelling along a `tool` edge (shown as its name)."""

    tool: BaseTool

    def __str__(self) -> str:
        return f"tool:{self.tool.name}"


class ToolComponent(Component[P]):
    """A tool node: its `tool` output feeds an agent; an `input` runs it directly."""

    category = "Tools"
    input_name = "input"

    def ports_for(self, params: P | None) -> tuple[list[Port], list[Port]]:
        return (
            [Port(self.input_name, "any", required=False, label=self.input_name)],
            [Port("tool", "tool", label="Tool"), Port("result", "text", label="Result")],
        )

    async def execute(
        self, built: Any, params: P, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        outputs: dict[str, Any] = {"tool": ToolHandle(built)}
        if self.input_name in inputs:
            value = as_text(inputs[self.input_name])
            call_id = f"{self.key}:direct"
            ctx.emit(
                "on_tool_call",
                {
                    "tool_name": built.name,
                    "tool_input": {self.input_name: value},
                    "call_id": call_id,
                },
            )
            result = await self.run_direct(built, value)
            ctx.emit(
                "on_tool_result", {"tool_name": built.name, "call_id": call_id, "output": result}
            )
            outputs["result"] = result
        return outputs

    async def run_direct(self, built: BaseTool, value: str) -> str:
        raise NotImplementedError


# --- calculator -------------------------------------------------------------------------------
CALCULATOR_SECONDS = 1.0


class CalculatorArgs(BaseModel):
    expression: str = Field(..., max_length=500, description="Arithmetic, e.g. (2 + 3) * 4")


async def _calculate(expression: str) -> str:
    try:
        return str(await cpu_bound(calculate, expression, timeout=CALCULATOR_SECONDS))
    except CpuLimitExceeded as exc:
        raise CalculatorError("The expression takes too long to compute.") from exc


async def _calculator_text(expression: str) -> str:
    try:
        return await _calculate(expression)
    except CalculatorError as exc:
        return f"Error: {exc}"


class Calculator(ToolComponent["Calculator.Params"]):
    key = "tool.calculator"
    label = "Calculator tool"
    description = "Evaluates arithmetic (+ - * / // % ** and abs, round, min, max, sqrt)."
    input_name = "expression"

    class Params(ComponentParams):
        pass

    def build(self, params: Calculator.Params, env: BuildEnv) -> BaseTool:
        return StructuredTool.from_function(
            coroutine=_calculator_text,
            name="calculator",
            description="Evaluate an arithmetic expression and return the number.",
            args_schema=CalculatorArgs,
        )

    async def run_direct(self, built: BaseTool, value: str) -> str:
        try:
            return await _calculate(value)
        except CalculatorError as exc:
            raise NodeError(f"Calculator: {exc}") from exc


# --- http_get ---------------------------------------------------------------------------------
class HttpGetArgs(BaseModel):
    url: str = Field(..., max_length=2048, description="An http(s) URL on the allowlist.")


class HttpGet(ToolComponent["HttpGet.Params"]):
    key = "tool.http_get"
    label = "HTTP GET tool"
    description = (
        "Fetches a URL whose host is on this workspace's allowlist; internal addresses are "
        "always refused, on every redirect."
    )
    input_name = "url"

    class Params(ComponentParams):
        max_bytes: int = Field(256 * 1024, ge=1, le=1024 * 1024)
        timeout_seconds: float = Field(10.0, ge=0.5, le=30.0)
        max_chars: int = Field(20_000, ge=100, le=200_000)

    def build(self, params: HttpGet.Params, env: BuildEnv) -> BaseTool:
        allowlist = [str(h) for h in (env.workspace.http_allowlist or []) if isinstance(h, str)]
        max_bytes, timeout, max_chars = (
            params.max_bytes,
            params.timeout_seconds,
            params.max_chars,
        )

        async def fetch(url: str) -> str:
            try:
                result = await safe_get(url, allowlist, max_bytes=max_bytes, timeout=timeout)
            except FetchRefused as exc:
                return f"Error: {exc}"
            note = " (truncated)" if result.truncated else ""
            return f"HTTP {result.status}{note}\n{result.text[:max_chars]}"

        def fetch_sync(url: str) -> str:
            raise NotImplementedError("http_get runs asynchronously")

        return StructuredTool.from_function(
            func=fetch_sync,
            coroutine=fetch,
            name="http_get",
            description="Fetch a web page (GET) and return its status and text.",
            args_schema=HttpGetArgs,
        )

    async def run_direct(self, built: BaseTool, value: str) -> str:
        text = await built.ainvoke({"url": value.strip()})
        if text.startswith("Error: "):
            raise NodeError(f"HTTP GET refused: {text[7:]}")
        return text


# --- doc_search -------------------------------------------------------------------------------
class DocSearchArgs(BaseModel):
    query: str = Field(..., max_length=2000, description="What to look for in the documents.")


class DocSearch(ToolComponent["DocSearch.Params"]):
    key = "tool.doc_search"
    label = "Document search tool"
    description = "Searches one of this workspace's knowledge bases (BM25 keyword search)."
    input_name = "query"

    class Params(ComponentParams):
        collection: str = Field(
            "default",
            pattern=COLLECTION_PATTERN,
            description="Older graphs: the knowledge base of this name (use knowledge_base).",
        )
        knowledge_base: int | None = Field(
            None,
            ge=1,
            description="The knowledge base to search.",
            json_schema_extra=knowledge_base_field_schema(),
        )
        k: int = Field(3, ge=1, le=20)

    def check(self, params: DocSearch.Params, env: BuildEnv) -> list[ParamProblem]:
        return knowledge_base_problems(env, params.knowledge_base)[1]

    def build(self, params: DocSearch.Params, env: BuildEnv) -> BaseTool:
        ref = KnowledgeRef(env.workspace_id, params.knowledge_base, params.collection)
        k = params.k

        def find(query: str) -> str:
            from knowledge import retrieval

            kb = ref.resolve()
            if kb is None:
                return "No matching documents."
            hits = retrieval.search(kb, query, mode="keyword", k=k).hits
            if not hits:
                return "No matching documents."
            return "\n\n".join(f"{hit.document}: {hit.text}" for hit in hits)

        async def search(query: str) -> str:
            return await run_db(find, query)

        def search_sync(query: str) -> str:
            raise NotImplementedError("doc_search runs asynchronously")

        return StructuredTool.from_function(
            func=search_sync,
            coroutine=search,
            name="doc_search",
            description="Search the knowledge base documents; returns the best passages.",
            args_schema=DocSearchArgs,
        )

    async def run_direct(self, built: BaseTool, value: str) -> str:
        return await built.ainvoke({"query": value})
