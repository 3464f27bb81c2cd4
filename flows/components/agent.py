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


AGENT_INPUTS = [
    Port("input", "any", label="Task"),
    Port("tools", "tool", required=False, multi=True, label="Tools"),
]
AGENT_OUTPUTS = [Port("text", "text", label="Answer")]


class ToolAgent(ChatModelComponent[AgentParams]):
    key = "agent.tools"
    label = "Tool-calling agent"
    category = "Agents"
    description = "A chat model that may call the connected tools before answering."
    provider = "openai"
    inputs = AGENT_INPUTS
    outputs = AGENT_OUTPUTS
    Params = AgentParams

    def check(self, params: AgentParams, env: BuildEnv) -> list[ParamProblem]:
        provider = env.credential_provider(params.credential)
        if provider is None:
            return [
                ParamProblem(
                    "credential", "credential_not_found", "No such credential in this workspace."
                )
            ]
        return []

    def credential(self, params: AgentParams, env: BuildEnv) -> Any:
        credential = env.credential(params.credential)
        if credential is None:
            raise NodeError("No such credential in this workspace.")
        return credential

    async def execute(
        self, built: Any, params: AgentParams, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        return await tool_loop(
            built,
            system_prompt=params.system_prompt,
            max_iterations=params.max_iterations,
            inputs=inputs,
            ctx=ctx,
        )


async def tool_loop(
    built: Any, *, system_prompt: str, max_iterations: int, inputs: dict[str, Any], ctx: RunContext
) -> dict[str, Any]:
    """The agent's loop (see the module docstring), shared by agent.tools and agent.demo."""
    tools = [h.tool for h in inputs.get("tools") or [] if isinstance(h, ToolHandle)]
    by_name = {tool.name: tool for tool in tools}
    model = built.bind_tools(tools) if tools else built
    messages: list[BaseMessage] = []
    if system_prompt:
        messages.append(SystemMessage(system_prompt))
    messages.append(HumanMessage(as_text(inputs.get("input"))))
    for _step in range(max_iterations):
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
            ctx.emit("on_tool_call", {"tool_name": name, "tool_input": args, "call_id": call_id})
            tool = by_name.get(name)
            if tool is None:
                output = f"Error: there is no tool named {name!r}."
            else:
                try:
                    output = as_text(await tool.ainvoke(args))
                except Exception as exc:
                    output = f"Error: the tool failed ({type(exc).__name__})."
            output = output[:MAX_TOOL_OUTPUT]
            ctx.emit("on_tool_result", {"tool_name": name, "call_id": call_id, "output": output})
            messages.append(ToolMessage(content=output, tool_call_id=call_id or name))
    raise NodeError(f"The agent did not finish within {max_iterations} steps.")


class DemoAgentParams(ComponentParams):
    max_iterations: int = Field(5, ge=1, le=20)
    system_prompt: str = Field(
        "You are a helpful assistant. Use the tools when they help.",
        max_length=20_000,
        json_schema_extra={"x-widget": "textarea"},
    )
    delay_ms: int = Field(30, ge=0, le=5_000, description="Pause between tokens.")


class DemoToolAgent(Component[DemoAgentParams]):
    """The tool-calling loop of agent.tools on the offline demo model, so a tool-calling
    flow runs (and shows its tool calls) without a provider or a credential."""

    key = "agent.demo"
    label = "Tool-calling agent (offline demo)"
    category = "Agents"
    description = (
        "DEMO ONLY: the tool-calling loop on the offline demo model. It picks a connected "
        "tool by simple rules (arithmetic: calculator; a URL: HTTP GET; otherwise document "
        "search), calls it, and answers with what the tool returned. No credential needed."
    )
    inputs = AGENT_INPUTS
    outputs = AGENT_OUTPUTS
    Params = DemoAgentParams

    def build(self, params: DemoAgentParams, env: BuildEnv) -> DemoChatModel:
        return DemoChatModel(delay_ms=params.delay_ms)

    async def execute(
        self, built: Any, params: DemoAgentParams, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        return await tool_loop(
            built,
            system_prompt=params.system_prompt,
            max_iterations=params.max_iterations,
            inputs=inputs,
            ctx=ctx,
        )
