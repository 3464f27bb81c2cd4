"""memory.conversation: conversation history persisted per workspace and run session.

A session is the editor's (its socket), a single call's from outside (its own), or a
conversation's (chat.Conversation: all its turns run in its session), so the memory of a
conversation's turn holds the turns before it, whichever worker runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from flows.components.base import BuildEnv, Component, ComponentParams, Port, RunContext
from flows.components.util import as_text, run_db

MAX_MESSAGE_CHARS = 50_000
# "system": earlier system messages of a chat called through the OpenAI-compatible endpoint.
ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class ConversationStore:
    """Reads and appends one conversation of one workspace (bound at build time)."""

    workspace_id: int
    conversation: str

    def history(self, session_id: str, limit: int) -> list[tuple[str, str]]:
        from flows.models import ConversationMessage

        rows = (
            ConversationMessage.objects.filter(
                workspace_id=self.workspace_id,
                session_id=session_id,
                conversation=self.conversation,
            )
            .order_by("-created_at", "-pk")
            .values_list("role", "content")[:limit]
        )
        return list(reversed(list(rows)))

    def append(self, session_id: str, role: str, content: str) -> None:
        from flows.models import ConversationMessage

        ConversationMessage.objects.create(
            workspace_id=self.workspace_id,
            session_id=session_id,
            conversation=self.conversation,
            role=role,
            content=content[:MAX_MESSAGE_CHARS],
        )

    def exchange(self, session_id: str, role: str, content: str, limit: int) -> str:
        before = self.history(session_id, limit)
        self.append(session_id, role, content)
        return "\n".join(f"{ROLE_LABELS.get(r, r)}: {c}" for r, c in before)


class ConversationMemory(Component["ConversationMemory.Params"]):
    key = "memory.conversation"
    label = "Conversation memory"
    category = "Memory"
    description = (
        "Records the message (as the user's or the assistant's) in this session's "
        "conversation and outputs the history before it. Use one before the model (user) "
        "and one after it (assistant)."
    )
    inputs = [Port("message", "any", label="Message")]
    outputs = [
        Port("history", "text", label="History"),
        Port("message", "text", label="Message"),
    ]

    class Params(ComponentParams):
        conversation: str = Field("default", pattern=r"^[A-Za-z0-9_-]{1,64}$")
        role: Literal["user", "assistant"] = "user"
        max_messages: int = Field(20, ge=1, le=200)

    def build(self, params: ConversationMemory.Params, env: BuildEnv) -> ConversationStore:
        return ConversationStore(env.workspace_id, params.conversation)

    async def execute(
        self, built: Any, params: ConversationMemory.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        if built.workspace_id != ctx.workspace_id:
            raise RuntimeError("memory built for another workspace")
        message = as_text(inputs.get("message"))
        history = await run_db(
            built.exchange,
            ctx.session_id,
            params.role,
            message,
            params.max_messages,
        )
        return {"history": history, "message": message}
