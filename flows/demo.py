"""Demo content for the demo workspace (`manage.py seed_demo`, run by `make run`).

Two flows that run offline on `llm.demo`:
- "Hello demo": chat input -> prompt template -> demo model -> text output;
- "Support bot": intent routing (a person asked for? -> hand-off reply), otherwise
  retrieval over a small FAQ corpus (BM25) -> prompt -> demo model -> answer.
"""

from __future__ import annotations

from django.db import transaction

from accounts.models import Membership, User, Workspace
from flows import services
from flows.models import Flow
from flows.selectors import documents_of

FAQ_COLLECTION = "faq"
FAQ = [
    (
        "Resetting your password",
        "To reset your password, open the login page, choose 'Forgot password' and follow "
        "the link we email you. The link is valid for 24 hours.",
    ),
    (
        "Billing and invoices",
        "Invoices are emailed on the first day of each month. Admins can download past "
        "invoices and change the billing address under Settings > Billing.",
    ),
    (
        "Cancelling a subscription",
        "You can cancel your subscription at any time under Settings > Billing > Cancel. "
        "You keep access until the end of the paid period.",
    ),
    (
        "Exporting your data",
        "Owners can export all workspace data as JSON from Settings > Export. The export "
        "is prepared in the background and emailed as a download link.",
    ),
    (
        "Inviting teammates",
        "Admins invite teammates from the Members page; invitations expire after 7 days "
        "and can be revoked before they are accepted.",
    ),
]


def hello_graph() -> dict:
    return {
        "nodes": [
            {
                "id": "chat_input_1",
                "component": "io.chat_input",
                "params": {"default": "Hello!"},
                "position": {"x": 0, "y": 80},
            },
            {
                "id": "template_1",
                "component": "prompt.template",
                "params": {"template": "Say hello to the user, who wrote: {message}"},
                "position": {"x": 260, "y": 80},
            },
            {
                "id": "demo_1",
                "component": "llm.demo",
                "params": {"reply": "", "delay_ms": 40},
                "position": {"x": 540, "y": 80},
            },
            {
                "id": "text_output_1",
                "component": "io.text_output",
                "params": {},
                "position": {"x": 800, "y": 80},
            },
        ],
        "edges": [
            _edge("chat_input_1", "text", "template_1", "message"),
            _edge("template_1", "prompt", "demo_1", "prompt"),
            _edge("demo_1", "text", "text_output_1", "text"),
        ],
    }


def support_bot_graph() -> dict:
    answer_template = (
        "You are a friendly support assistant. Answer the question from the FAQ.\n\n"
        "Context:\n{context}\n\nQuestion: {question}"
    )
    return {
        "nodes": [
            _node("question", "io.chat_input", {"default": "How do I reset my password?"}, 0, 160),
            _node(
                "intent",
                "logic.router",
                {
                    "rules": [
                        {
                            "output": "human",
                            "match": "keyword",
                            "pattern": "human, person, agent, representative, call me, 人工",
                        }
                    ],
                    "default_output": "faq",
                },
                240,
                160,
            ),
            _node("faq_docs", "docs.corpus", {"collection": FAQ_COLLECTION}, 240, 360),
            _node("retrieve", "retriever.bm25", {"k": 1}, 500, 260),
            _node("answer_prompt", "prompt.template", {"template": answer_template}, 760, 200),
            _node("answer_model", "llm.demo", {"reply": "", "delay_ms": 35}, 1020, 200),
            _node("answer", "io.text_output", {}, 1280, 200),
            _node(
                "handoff_model",
                "llm.demo",
                {
                    "reply": "Of course — I am passing you to a person on our support team. "
                    "Someone will reply by email within one business day.",
                    "delay_ms": 35,
                },
                500,
                40,
            ),
            _node("handoff", "io.text_output", {}, 760, 40),
        ],
        "edges": [
            _edge("question", "text", "intent", "input"),
            _edge("intent", "faq", "retrieve", "query"),
            _edge("faq_docs", "documents", "retrieve", "documents"),
            _edge("retrieve", "context", "answer_prompt", "context"),
            _edge("intent", "faq", "answer_prompt", "question"),
            _edge("answer_prompt", "prompt", "answer_model", "prompt"),
            _edge("answer_model", "text", "answer", "text"),
            _edge("intent", "human", "handoff_model", "prompt"),
            _edge("handoff_model", "text", "handoff", "text"),
        ],
    }


def _node(node_id: str, component: str, params: dict, x: int, y: int) -> dict:
    return {"id": node_id, "component": component, "params": params, "position": {"x": x, "y": y}}


def _edge(source: str, source_port: str, target: str, target_port: str) -> dict:
    return {
        "source": source,
        "source_port": source_port,
        "target": target,
        "target_port": target_port,
    }


@transaction.atomic
def seed_demo_flow(*, workspace: Workspace, user: User) -> list[Flow]:
    """Create the FAQ documents and the two demo flows in `workspace` (owned by `user`)."""
    acting = Membership.objects.get(workspace=workspace, user=user)
    if not documents_of(workspace, FAQ_COLLECTION).exists():
        for title, content in FAQ:
            services.document_create(
                workspace=workspace,
                acting=acting,
                title=title,
                content=content,
                collection=FAQ_COLLECTION,
            )
    flows = []
    for name, description, graph in (
        (
            "Support bot",
            "Intent routing, then BM25 retrieval over the FAQ and an answer (offline demo model).",
            support_bot_graph(),
        ),
        ("Hello demo", "Chat input -> prompt -> demo model -> output.", hello_graph()),
    ):
        flows.append(
            services.flow_create(
                workspace=workspace,
                acting=acting,
                name=name,
                description=description,
                graph=graph,
                note="demo",
            )
        )
    return flows
