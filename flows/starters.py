"""Starter templates: the flows "New flow" offers besides a blank canvas.

Templates are data written here, in code (never user-supplied): a name, one line saying
what it does, the graph, and the sample documents it reads, if any. Every template runs
offline on the demo model (`llm.demo`, `agent.demo`), so a fresh install can run each one
at once; swap in a real model node to go further.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType

from flows.demo import FAQ, FAQ_COLLECTION, support_bot_graph

HANDBOOK_COLLECTION = "handbook"
HANDBOOK = [
    (
        "Working hours",
        "Core hours are 10:00 to 16:00 in your time zone; outside them, work when it suits "
        "you and keep your calendar current.",
    ),
    (
        "Expenses",
        "Submit receipts within 30 days in the expenses tool. Travel over 500 euros needs "
        "your manager's approval before booking.",
    ),
    (
        "Holidays",
        "Everyone has 28 days of paid holidays a year. Book holidays in the HR tool at least two "
        "weeks ahead for absences longer than three days.",
    ),
    (
        "Equipment",
        "New joiners choose a laptop on their first day; accessories up to 300 euros are "
        "reimbursed once a year.",
    ),
]


@dataclass(frozen=True)
class Starter:
    """One template of the gallery."""

    key: str
    name: str
    description: str  # one line, shown on the card
    graph: Callable[[], dict]
    # (collection, [(title, content)]): added to the workspace when the collection is empty.
    documents: tuple[tuple[str, list[tuple[str, str]]], ...] = field(default=())
    # What to type when running it the first time (shown in the gallery and the test).
    try_input: str = ""


def _node(node_id: str, component: str, params: dict, x: int, y: int) -> dict:
    return {"id": node_id, "component": component, "params": params, "position": {"x": x, "y": y}}


def _edge(source: str, source_port: str, target: str, target_port: str) -> dict:
    return {
        "source": source,
        "source_port": source_port,
        "target": target,
        "target_port": target_port,
    }


def basic_prompting_graph() -> dict:
    return {
        "nodes": [
            _node("question", "io.chat_input", {"default": "What is Flowdeck?"}, 0, 60),
            _node(
                "prompt",
                "prompt.template",
                {"template": "Answer in one friendly sentence.\n\nQuestion: {question}"},
                300,
                60,
            ),
            _node("model", "llm.demo", {"reply": "", "delay_ms": 30}, 600, 60),
            _node("answer", "io.text_output", {}, 900, 60),
        ],
        "edges": [
            _edge("question", "text", "prompt", "question"),
            _edge("prompt", "prompt", "model", "prompt"),
            _edge("model", "text", "answer", "text"),
        ],
        "annotations": [
            {
                "id": "note_swap_model",
                "kind": "note",
                "text": "The demo model runs offline. Swap it for a real model node "
                "(OpenAI-compatible, Anthropic, Ollama) and pick a credential.",
                "position": {"x": 560, "y": 260},
                "size": {"width": 300, "height": 110},
                "color": "yellow",
            }
        ],
    }


def memory_chatbot_graph() -> dict:
    template = (
        "You are a friendly assistant. Continue the conversation.\n\n"
        "Conversation so far:\n{history}\n\nUser: {message}"
    )
    return {
        "nodes": [
            _node("message", "io.chat_input", {"default": "Hi, I'm Sam."}, 0, 80),
            _node(
                "remember_user",
                "memory.conversation",
                {"conversation": "chat", "role": "user", "max_messages": 20},
                300,
                80,
            ),
            _node("prompt", "prompt.template", {"template": template}, 600, 80),
            _node("model", "llm.demo", {"reply": "", "delay_ms": 30}, 900, 80),
            _node(
                "remember_reply",
                "memory.conversation",
                {"conversation": "chat", "role": "assistant", "max_messages": 20},
                1200,
                80,
            ),
            _node("reply", "io.text_output", {}, 1500, 80),
        ],
        "edges": [
            _edge("message", "text", "remember_user", "message"),
            _edge("remember_user", "history", "prompt", "history"),
            _edge("remember_user", "message", "prompt", "message"),
            _edge("prompt", "prompt", "model", "prompt"),
            _edge("model", "text", "remember_reply", "message"),
            _edge("remember_reply", "message", "reply", "text"),
        ],
        "annotations": [
            {
                "id": "note_memory",
                "kind": "note",
                "text": "Memory is kept per run session: run it twice from the same editor "
                "tab and the second prompt carries the first exchange.",
                "position": {"x": 300, "y": 300},
                "size": {"width": 320, "height": 110},
                "color": "blue",
            }
        ],
    }


def document_qa_graph() -> dict:
    template = (
        "Answer the question from the handbook only.\n\nContext:\n{context}\n\nQuestion: {question}"
    )
    return {
        "nodes": [
            _node("question", "io.chat_input", {"default": "How many holidays do I get?"}, 0, 40),
            _node("handbook", "docs.corpus", {"collection": HANDBOOK_COLLECTION}, 0, 260),
            _node("retrieve", "retriever.bm25", {"k": 1}, 300, 160),
            _node("prompt", "prompt.template", {"template": template}, 600, 100),
            _node("model", "llm.demo", {"reply": "", "delay_ms": 30}, 900, 100),
            _node("answer", "io.text_output", {}, 1200, 100),
        ],
        "edges": [
            _edge("question", "text", "retrieve", "query"),
            _edge("handbook", "documents", "retrieve", "documents"),
            _edge("retrieve", "context", "prompt", "context"),
            _edge("question", "text", "prompt", "question"),
            _edge("prompt", "prompt", "model", "prompt"),
            _edge("model", "text", "answer", "text"),
        ],
        "annotations": [
            {
                "id": "group_retrieval",
                "kind": "group",
                "title": "Retrieval",
                "position": {"x": -30, "y": 120},
                "size": {"width": 600, "height": 330},
                "color": "green",
            }
        ],
    }


def tool_agent_graph() -> dict:
    return {
        "nodes": [
            _node("task", "io.chat_input", {"default": "What is 6 * 7?"}, 0, 40),
            _node("calculator", "tool.calculator", {}, 0, 240),
            _node(
                "agent",
                "agent.demo",
                {
                    "max_iterations": 3,
                    "system_prompt": "Use the calculator for arithmetic.",
                    "delay_ms": 30,
                },
                320,
                100,
            ),
            _node("answer", "io.text_output", {}, 640, 100),
        ],
        "edges": [
            _edge("task", "text", "agent", "input"),
            _edge("calculator", "tool", "agent", "tools"),
            _edge("agent", "text", "answer", "text"),
        ],
    }


def support_bot_template_graph() -> dict:
    """The seed's customer-service bot (flows.demo), with a note saying how it routes."""
    return {
        **support_bot_graph(),
        "annotations": [
            {
                "id": "note_routing",
                "kind": "note",
                "text": "Asking for a person (human, agent, 人工 …) goes to the hand-off; "
                "everything else is answered from the FAQ collection.",
                "position": {"x": 0, "y": 300},
                "size": {"width": 210, "height": 130},
                "color": "yellow",
            }
        ],
    }


STARTERS: MappingProxyType[str, Starter] = MappingProxyType(
    {
        starter.key: starter
        for starter in (
            Starter(
                key="basic-prompting",
                name="Basic prompting",
                description="A question, a prompt template and a model: the smallest useful flow.",
                graph=basic_prompting_graph,
                try_input="What is Flowdeck?",
            ),
            Starter(
                key="memory-chatbot",
                name="Memory chatbot",
                description="A chatbot that remembers the conversation of each session.",
                graph=memory_chatbot_graph,
                try_input="Hi, I'm Sam.",
            ),
            Starter(
                key="document-qa",
                name="Document Q&A",
                description="Answers questions from a document collection (BM25 retrieval).",
                graph=document_qa_graph,
                documents=((HANDBOOK_COLLECTION, HANDBOOK),),
                try_input="How many holidays do I get?",
            ),
            Starter(
                key="tool-agent",
                name="Tool-calling agent",
                description="An agent that calls a calculator tool and answers with its result.",
                graph=tool_agent_graph,
                try_input="What is 6 * 7?",
            ),
            Starter(
                key="support-bot",
                name="Customer-service bot",
                description=(
                    "Intent routing, then knowledge retrieval over an FAQ and answer "
                    "generation; asks for a person go to a hand-off."
                ),
                graph=support_bot_template_graph,
                documents=((FAQ_COLLECTION, FAQ),),
                try_input="How do I reset my password?",
            ),
        )
    }
)


def get_starter(key: object) -> Starter | None:
    """The template `key` (an exact lookup), or None."""
    return STARTERS.get(key) if isinstance(key, str) else None
