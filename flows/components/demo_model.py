"""`DemoChatModel`: an offline, deterministic LangChain chat model that streams word by word.

It is a real `BaseChatModel`, so `llm.demo` goes through exactly the same streaming path as
the provider models. Clearly a demo: it does not understand anything.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolCallChunk,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from flows.components.patterns import compile_trusted
from flows.components.tokens import split_tokens

CONTEXT_RE = re.compile(r"(?:^|\n)\s*(?:context|faq)\s*:\s*\n?(.+?)(?:\n\s*\n|\Z)", re.I | re.S)
# Arithmetic inside a sentence ("What is 6 * 7?"): digits joined by operators; on RE2
# (linear time), since the prompt is user input of any size.
ARITHMETIC_RE = compile_trusted(r"[\d.(][\d.\s()]{0,40}(?:[-+*/%][\d.\s()]{1,40}){1,20}")
URL_RE = compile_trusted(r"https?://[^\s\"'<>]+")


def demo_reply(prompt: str) -> str:
    """The demo model's deterministic answer to `prompt` when no reply is configured.

    With a "Context:" section (retrieval results) it answers from its first passage;
    otherwise it echoes the prompt's last line.
    """
    match = CONTEXT_RE.search(prompt)
    if match and match.group(1).strip():
        passage = " ".join(match.group(1).split())[:400]
        return f"Here is what I found: {passage}"
    lines = [line.strip() for line in prompt.strip().splitlines() if line.strip()]
    last = lines[-1][:400] if lines else ""
    return f"(demo model) You said: {last}" if last else "(demo model) Hello!"


def demo_tool_call(prompt: str, tool_names: Sequence[str]) -> tuple[str, dict[str, str]] | None:
    """Which connected tool the demo agent calls for `prompt`, with what arguments, by
    plain rules (it understands nothing): arithmetic -> calculator, a URL -> http_get,
    otherwise doc_search; None when none of those tools is connected."""
    prompt = prompt[:20_000]
    arithmetic = ARITHMETIC_RE.search(prompt)
    if "calculator" in tool_names and arithmetic and any(c.isdigit() for c in arithmetic.group()):
        return "calculator", {"expression": arithmetic.group().strip()}
    url = URL_RE.search(prompt)
    if "http_get" in tool_names and url:
        return "http_get", {"url": url.group()[:2048]}
    if "doc_search" in tool_names:
        return "doc_search", {"query": prompt.strip()[:2000]}
    return None


def _prompt_text(messages: list[BaseMessage]) -> str:
    for message in reversed(messages):
        if message.type == "human" and isinstance(message.content, str):
            return message.content
    return messages[-1].content if messages and isinstance(messages[-1].content, str) else ""


class DemoChatModel(BaseChatModel):
    """Streams `reply` (or `demo_reply(prompt)`) word by word, `delay_ms` between words."""

    reply: str = ""
    delay_ms: int = 30
    # Names of the tools bound with bind_tools (agent.demo): the model may "call" one.
    tool_names: tuple[str, ...] = ()

    @property
    def _llm_type(self) -> str:
        return "flowdeck-demo"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> DemoChatModel:
        """A copy that knows the tools' names: its first answer to a task may be a call."""
        names = tuple(str(getattr(tool, "name", tool)) for tool in tools)
        return self.model_copy(update={"tool_names": names})

    def _tool_call(self, messages: list[BaseMessage]) -> AIMessageChunk | None:
        """The chunk that calls a tool, on the first turn only (after a tool answered,
        the model answers in text)."""
        if not self.tool_names or any(isinstance(m, ToolMessage) for m in messages):
            return None
        planned = demo_tool_call(_prompt_text(messages), self.tool_names)
        if planned is None:
            return None
        name, args = planned
        call: ToolCallChunk = {
            "name": name,
            "args": json.dumps(args),
            "id": "demo_call_1",
            "index": 0,
        }
        return AIMessageChunk(content="", tool_call_chunks=[call])

    def _text(self, messages: list[BaseMessage]) -> str:
        if self.reply:
            return self.reply
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            calls = [c for m in messages for c in getattr(m, "tool_calls", None) or []]
            name = next(
                (c["name"] for c in calls if c.get("id") == results[-1].tool_call_id), "tool"
            )
            output = " ".join(str(results[-1].content).split())[:400]
            return f"I asked the {name} tool. It answered: {output}"
        return demo_reply(_prompt_text(messages))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._tool_call(messages)
        if call is not None:
            message = AIMessage(content="", tool_calls=call.tool_calls)
            return ChatResult(generations=[ChatGeneration(message=message)])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self._text(messages)))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._tool_call(messages)
        if call is not None:
            yield ChatGenerationChunk(message=call)
            return
        for i, token in enumerate(split_tokens(self._text(messages))):
            if i and self.delay_ms:
                time.sleep(self.delay_ms / 1000)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._tool_call(messages)
        if call is not None:
            yield ChatGenerationChunk(message=call)
            return
        for i, token in enumerate(split_tokens(self._text(messages))):
            if i and self.delay_ms:
                await asyncio.sleep(self.delay_ms / 1000)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk
