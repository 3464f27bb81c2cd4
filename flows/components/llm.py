"""Chat models. Endpoint and key come from a workspace Credential, never from the node."""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import Field, SecretStr

from flows.components.base import (
    BuildEnv,
    Component,
    ComponentParams,
    DecryptedCredential,
    NodeError,
    ParamProblem,
    Port,
    RunContext,
    credential_field_schema,
)
from flows.components.demo_model import DemoChatModel
from flows.components.util import as_text, chunk_text
from flows.endpoints import EndpointRefused, check_model_endpoint

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"


async def streamed_reply(model: Any, messages: list[BaseMessage], ctx: RunContext) -> str:
    """Stream `model`'s reply to `messages` through the run (`ctx.model_stream` emits the
    tokens); the whole text."""
    return "".join([chunk_text(chunk) async for chunk in ctx.model_stream(model.astream(messages))])


def messages_for(prompt: str, system_prompt: str) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    if system_prompt:
        messages.append(SystemMessage(system_prompt))
    messages.append(HumanMessage(prompt))
    return messages


def chat_model_for(
    credential: DecryptedCredential,
    *,
    model: str,
    temperature: float,
    max_tokens: int | None,
    check_endpoint: bool = True,
    max_retries: int = 1,
) -> Any:
    """The LangChain chat model for a credential's provider (endpoint and key from it); the
    endpoint is checked again now (flows.endpoints), with a fresh DNS answer."""
    if check_endpoint:
        try:
            check_model_endpoint(credential.base_url)
        except EndpointRefused as exc:
            raise NodeError(f"The credential's endpoint is not allowed: {exc}") from exc
    # The provider SDKs are imported here, not at the top (no import cycle): together they
    # take seconds to import, and most processes that load the registry (Daphne, commands)
    # never build a model; a worker imports them at start (warm_up_model_clients).
    if credential.provider == "openai":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=model,
            temperature=temperature,
            max_completion_tokens=max_tokens,  # the field's alias (it is `max_tokens` within)
            base_url=credential.base_url or None,
            api_key=SecretStr(credential.api_key or "not-needed"),
            streaming=True,
            # Asks for the final usage chunk (`stream_options.include_usage`): a run's token
            # counts come from the provider, not from counting chunks.
            stream_usage=True,
            max_retries=max_retries,
            timeout=120,
            # Its async stream wraps every chunk in `asyncio.wait_for` (a Task per chunk: a
            # fifth of the CPU per token). A stalled stream is bounded by the run's limit.
            stream_chunk_timeout=None,
        )
    if credential.provider == "anthropic":
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(
            model=model,
            temperature=temperature,
            max_tokens_to_sample=max_tokens or 1024,
            base_url=credential.base_url or None,
            api_key=SecretStr(credential.api_key or "not-needed"),
            streaming=True,
            max_retries=max_retries,
            timeout=120,  # the alias of its `default_request_timeout`
        )
    if credential.provider == "ollama":
        from langchain_ollama import ChatOllama

        headers = {"Authorization": f"Bearer {credential.api_key}"} if credential.api_key else {}
        return ChatOllama(
            model=model,
            temperature=temperature,
            num_predict=max_tokens,
            base_url=credential.base_url or None,
            client_kwargs={"headers": headers, "timeout": 120},
        )
    raise NodeError("This credential's provider is not supported.")


def warm_up_model_clients() -> None:
    """Build each provider's chat model once, without any request, so the SDK modules they
    import lazily (openai's resources, anyio's asyncio backend, the Anthropic and Ollama
    clients) load at worker start, not on the run loop inside the first run: measured, a
    first run's imports stalled every stream of the process for tens of milliseconds."""
    importlib.import_module("anyio._backends._asyncio")
    for provider in ("openai", "anthropic", "ollama"):
        credential = DecryptedCredential(
            id=0, provider=provider, base_url="http://127.0.0.1:9", api_key="warm-up"
        )
        try:
            model = chat_model_for(
                credential, model="warm-up", temperature=0, max_tokens=1, check_endpoint=False
            )
        except ImportError:  # an optional provider that is not installed
            continue
        for attribute in ("async_client", "_async_client", "_client"):
            getattr(model, attribute, None)  # clients some SDKs create on first access


class ModelParams(ComponentParams):
    credential: int = Field(
        ...,
        ge=1,
        description="A credential of this workspace (provider connection).",
        json_schema_extra=credential_field_schema(),
    )
    model: str = Field("gpt-4o-mini", pattern=MODEL_NAME_PATTERN, max_length=200)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1, le=100_000)
    system_prompt: str = Field("", max_length=20_000, json_schema_extra={"x-widget": "textarea"})


MP = TypeVar("MP", bound=ModelParams)


class ChatModelComponent(Component[MP]):
    """Base for provider chat models (and the agent): prompt in, streamed text out. `MP` is
    the params model, ModelParams or one that extends it."""

    category = "Models"
    provider: str = ""
    inputs = [Port("prompt", "any", label="Prompt")]
    outputs = [Port("text", "text", label="Reply")]

    def check(self, params: MP, env: BuildEnv) -> list[ParamProblem]:
        provider = env.credential_provider(params.credential)
        if provider is None:
            return [
                ParamProblem(
                    "credential", "credential_not_found", "No such credential in this workspace."
                )
            ]
        if provider != self.provider:
            return [
                ParamProblem(
                    "credential",
                    "credential_provider",
                    f"This node needs a credential for the {self.provider} provider.",
                )
            ]
        return []

    def credential(self, params: MP, env: BuildEnv) -> Any:
        credential = env.credential(params.credential)
        if credential is None or credential.provider != self.provider:
            raise NodeError("No such credential in this workspace.")
        return credential

    def build(self, params: MP, env: BuildEnv) -> Any:
        return chat_model_for(
            self.credential(params, env),
            model=params.model,
            temperature=params.temperature,
            max_tokens=params.max_tokens,
            max_retries=env.provider_retries,
        )

    async def execute(
        self, built: Any, params: MP, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        messages = messages_for(as_text(inputs.get("prompt")), params.system_prompt)
        return {"text": await streamed_reply(built, messages, ctx)}


class OpenAIChat(ChatModelComponent[ModelParams]):
    key = "llm.openai_chat"
    label = "OpenAI-compatible chat"
    description = "Any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, LM Studio...)."
    provider = "openai"
    Params = ModelParams


class AnthropicChat(ChatModelComponent[ModelParams]):
    key = "llm.anthropic"
    label = "Anthropic chat"
    description = "Claude models through the Anthropic Messages API (langchain-anthropic)."
    provider = "anthropic"
    Params = ModelParams


class OllamaChat(ChatModelComponent[ModelParams]):
    key = "llm.ollama"
    label = "Ollama chat"
    description = "A model served by Ollama's native API (langchain-ollama)."
    provider = "ollama"
    Params = ModelParams


class DemoChat(Component["DemoChat.Params"]):
    key = "llm.demo"
    label = "Demo model (offline)"
    category = "Models"
    description = (
        "DEMO ONLY: an offline, deterministic stand-in for a model. Streams `reply` word by "
        "word (or a canned answer derived from the prompt); it does not understand anything."
    )
    inputs = [Port("prompt", "any", label="Prompt")]
    outputs = [Port("text", "text", label="Reply")]

    class Params(ComponentParams):
        reply: str = Field(
            "",
            max_length=100_000,
            description="Text to stream; empty = an answer derived from the prompt.",
            json_schema_extra={"x-widget": "textarea"},
        )
        delay_ms: int = Field(30, ge=0, le=5_000, description="Pause between tokens.")
        system_prompt: str = Field("", max_length=20_000)

    def build(self, params: DemoChat.Params, env: BuildEnv) -> DemoChatModel:
        return DemoChatModel(reply=params.reply, delay_ms=params.delay_ms)

    async def execute(
        self, built: Any, params: DemoChat.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        messages = messages_for(as_text(inputs.get("prompt")), params.system_prompt)
        return {"text": await streamed_reply(built, messages, ctx)}
