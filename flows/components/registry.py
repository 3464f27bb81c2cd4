"""The registry: component key -> class, written in code. The only way a graph's
`component` string becomes behaviour is an exact lookup in this dict."""

from __future__ import annotations

from types import MappingProxyType

from flows.components.agent import DemoToolAgent, ToolAgent
from flows.components.approval import Approval
from flows.components.base import Component
from flows.components.io import ChatInput, TextOutput
from flows.components.iterate import Iterate
from flows.components.llm import AnthropicChat, DemoChat, OllamaChat, OpenAIChat
from flows.components.logic import Router
from flows.components.loop import Loop
from flows.components.memory import ConversationMemory
from flows.components.parsers import JsonParser, TextParser
from flows.components.prompt import PromptTemplateComponent
from flows.components.retrieval import Bm25Retriever, DocsCorpus, KnowledgeRetriever
from flows.components.subflow import SubFlow
from flows.components.tools import Calculator, DocSearch, HttpGet

_CLASSES: list[type[Component]] = [
    ChatInput,
    TextOutput,
    PromptTemplateComponent,
    OpenAIChat,
    AnthropicChat,
    OllamaChat,
    DemoChat,
    TextParser,
    JsonParser,
    ConversationMemory,
    DocsCorpus,
    Bm25Retriever,
    KnowledgeRetriever,
    ToolAgent,
    DemoToolAgent,
    Calculator,
    HttpGet,
    DocSearch,
    Router,
    Approval,
    SubFlow,
    Iterate,
    Loop,
]

REGISTRY: MappingProxyType[str, type[Component]] = MappingProxyType(
    {cls.key: cls for cls in _CLASSES}
)
_INSTANCES: dict[str, Component] = {key: cls() for key, cls in REGISTRY.items()}


def get_component(key: object) -> Component | None:
    """The registered component for exactly `key`, or None (never imports anything)."""
    if not isinstance(key, str):
        return None
    return _INSTANCES.get(key)


def all_components() -> list[Component]:
    return [_INSTANCES[key] for key in sorted(_INSTANCES)]
