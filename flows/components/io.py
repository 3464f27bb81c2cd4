"""Where a flow's text comes in and goes out."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from flows.components.base import Component, ComponentParams, Port, RunContext
from flows.components.util import as_text


class ChatInput(Component["ChatInput.Params"]):
    """The run's input for this node arrives as `inputs["value"]` (see base.py)."""

    key = "io.chat_input"
    label = "Chat input"
    category = "Input / output"
    description = "Text given when the flow is run (the chat message)."
    inputs = []
    outputs = [Port("text", "text", label="Message")]

    class Params(ComponentParams):
        default: str = Field("", max_length=20_000, description="Used when the run gives no text.")

    async def execute(
        self, built: Any, params: ChatInput.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        value = inputs.get("value")
        text = as_text(value) if value not in (None, "") else params.default
        return {"text": text}


class TextOutput(Component["TextOutput.Params"]):
    key = "io.text_output"
    label = "Text output"
    category = "Input / output"
    description = "Shows its input as text; its value is one of the run's outputs."
    inputs = [Port("text", "any", label="Text")]
    outputs = [Port("text", "text", label="Text")]

    class Params(ComponentParams):
        max_chars: int = Field(100_000, ge=1, le=200_000)

    async def execute(
        self, built: Any, params: TextOutput.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        return {"text": as_text(inputs.get("text"))[: params.max_chars]}
