"""agent.tools: a tool-calling agent over whitelisted tool nodes.

The loop is LangChain's tool-calling protocol done in the open: the chat model (bound to
the tools with `bind_tools`) streams through `ctx.model_stream` (tokens go out live, a
cancel stops it between chunks) while its chunks are added up; if it asks for tools, each
call is emitted as `on_tool_call`, run, emitted as `on_tool_result` and fed back as a
ToolMessage; until the model answers in text or `max_iterations` is reached. Doing it
here, rather than inside an opaque agent executor, is what lets the tokens stream.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_chunk_to_message,
)
from pydantic import BaseModel, Field

from flows.components.base import NodeError, ParamProblem, Params, Port, RunContext
from flows.components.demo_model import DemoChatModel
from flows.components.llm import ChatModelComponent, ModelParams
from flows.components.tools import ToolHandle
from flows.components.util import as_text, chunk_text

MAX_TOOL_OUTPUT = 20_000


class AgentParams(ModelParams):
    max_iterations: int = Field(5, ge=1, le=20)
    system_prompt: str = Field(
        "You are a helpful assistant. Use the tools when they help.",
        max_length=20_000,
        json_schema_extra={"x-widget": "textarea"},
    )


class ToolAgent(ChatModelComponent):
    key = "agent.tools"
    label = "Tool-calling agent"
    category = "Agents"
    description = "A chat model that may call the connected tools before answering."
    provider = "openai"
    inputs = [
        Port("input", "any", label="Task"),
        Port("tools", "tool", required=False, multi=True, label="Tools"),
    ]
    outputs = [Port("text", "text", label="Answer")]
    Params = AgentParams

    def check(self, params: BaseModel, env: Any) -> list:
        provider = env.credential_provider(params.credential)  # type: ignore[attr-defined]
        if provider is None:
            return [
                ParamProblem(
                    "credential", "credential_not_found", "No such credential in this workspace."
                )
            ]
        return []

    def credential(self, params: BaseModel, env: Any) -> Any:
        credential = env.credential(params.credential)  # type: ignore[attr-defined]
        if credential is None:
            raise NodeError("No such credential in this workspace.")
        return credential

    async def execute(
        self, built: Any, params: BaseModel, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        tools = [h.tool for h in inputs.get("tools") or [] if isinstance(h, ToolHandle)]
        by_name = {tool.name: tool for tool in tools}
        model = built.bind_tools(tools) if tools else built
        messages: list[BaseMessage] = []
        if params.system_prompt:  # type: ignore[attr-defined]
            messages.append(SystemMessage(params.system_prompt))  # type: ignore[attr-defined]
        messages.append(HumanMessage(as_text(inputs.get("input"))))
        for _step in range(params.max_iterations):  # type: ignore[attr-defined]
            reply = None
            async for chunk in ctx.model_stream(model.astream(messages)):
                reply = chunk if reply is None else reply + chunk  # tool calls accumulate
            if reply is None:
                raise NodeError("The model returned nothing.")
            message = message_chunk_to_message(reply)
            messages.append(message)
            calls = getattr(message, "tool_calls", None) or []
            if not calls:
                return {"text": chunk_text(message)}
            for call in calls:
                ctx.check_cancelled()
                name, args, call_id = call.get("name", ""), call.get("args", {}), call.get("id")
                ctx.emit(
                    "on_tool_call", {"tool_name": name, "tool_input": args, "call_id": call_id}
                )
                tool = by_name.get(name)
                if tool is None:
                    output = f"Error: there is no tool named {name!r}."
                else:
                    try:
                        output = as_text(await tool.ainvoke(args))
                    except Exception as exc:
                        output = f"Error: the tool failed ({type(exc).__name__})."
                output = output[:MAX_TOOL_OUTPUT]
                ctx.emit(
                    "on_tool_result", {"tool_name": name, "call_id": call_id, "output": output}
                )
                messages.append(ToolMessage(content=output, tool_call_id=call_id or name))
        raise NodeError(
            f"The agent did not finish within {params.max_iterations} steps."  # type: ignore[attr-defined]
        )


class DemoAgentParams(Params):
    max_iterations: int = Field(5, ge=1, le=20)
    system_prompt: str = Field(
        "You are a helpful assistant. Use the tools when they help.",
        max_length=20_000,
        json_schema_extra={"x-widget": "textarea"},
    )
    delay_ms: int = Field(30, ge=0, le=5_000, description="Pause between tokens.")


class DemoToolAgent(ToolAgent):
    """The tool-calling loop of agent.tools on the offline demo model, so a tool-calling
    flow runs (and shows its tool calls) without a provider or a credential."""

    key = "agent.demo"
    label = "Tool-calling agent (offline demo)"
    description = (
        "DEMO ONLY: the tool-calling loop on the offline demo model. It picks a connected "
        "tool by simple rules (arithmetic: calculator; a URL: HTTP GET; otherwise document "
        "search), calls it, and answers with what the tool returned. No credential needed."
    )
    provider = ""
    Params = DemoAgentParams

    def check(self, params: BaseModel, env: Any) -> list:
        return []

    def build(self, params: BaseModel, env: Any) -> DemoChatModel:
        return DemoChatModel(delay_ms=params.delay_ms)  # type: ignore[attr-defined]
