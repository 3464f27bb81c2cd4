"""`DemoChatModel`: an offline, deterministic LangChain chat model that streams word by word.

It is a real `BaseChatModel`, so `llm.demo` goes through exactly the same streaming path as
the provider models. Clearly a demo: it does not understand anything.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from flows.components.tokens import split_tokens

CONTEXT_RE = re.compile(r"(?:^|\n)\s*(?:context|faq)\s*:\s*\n?(.+?)(?:\n\s*\n|\Z)", re.I | re.S)


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


def _prompt_text(messages: list[BaseMessage]) -> str:
    for message in reversed(messages):
        if message.type == "human" and isinstance(message.content, str):
            return message.content
    return messages[-1].content if messages and isinstance(messages[-1].content, str) else ""


class DemoChatModel(BaseChatModel):
    """Streams `reply` (or `demo_reply(prompt)`) word by word, `delay_ms` between words."""

    reply: str = ""
    delay_ms: int = 30

    @property
    def _llm_type(self) -> str:
        return "flowdeck-demo"

    def _text(self, messages: list[BaseMessage]) -> str:
        return self.reply or demo_reply(_prompt_text(messages))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self._text(messages)))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
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
        for i, token in enumerate(split_tokens(self._text(messages))):
            if i and self.delay_ms:
                await asyncio.sleep(self.delay_ms / 1000)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk
