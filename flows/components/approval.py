"""logic.approval: a person decides before the run goes on (issue 17, human approval).

The run pauses at this node: it logs `waiting_for_approval` (what is asked, the value, who
may decide), writes its log, and ends its execution in the `waiting` state, holding no
worker thread and no Celery task, for as long as it takes. A member with the node's role
approves (optionally editing the value) or rejects, with a comment, over the WebSocket or
the HTTP API (runs.approvals); the run is queued again, picks up exactly where it stopped
(what its nodes did is read back from its own log), logs `approval_decided` and sends the
value to the `approved` or the `rejected` output. An optional timeout decides by itself.
The engine does all of that (runs/engine/executor.py): this class only declares the node.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from flows.components.base import Component, ComponentParams, NodeError, Port, RunContext

MAX_TIMEOUT_SECONDS = 90 * 24 * 3600


class Approval(Component["Approval.Params"]):
    key = "logic.approval"
    label = "Human approval"
    category = "Logic"
    description = (
        "Pauses the run until a member with the chosen role approves (optionally editing the "
        "value) or rejects it, with a comment. The value goes on to `approved` or `rejected`; "
        "nodes behind the other output are skipped. The run waits without using a worker, "
        "for days if need be; an optional timeout decides by itself."
    )
    inputs = [Port("value", "any", label="Value")]
    outputs = [Port("approved", "any", label="Approved"), Port("rejected", "any", label="Rejected")]
    pauses_for_approval = True

    class Params(ComponentParams):
        prompt: str = Field(
            "Approve this?",
            min_length=1,
            max_length=2000,
            description="What the person deciding is asked.",
            json_schema_extra={"x-widget": "textarea"},
        )
        role: Literal["editor", "admin", "owner"] = Field(
            "editor", description="Members with this role or above decide."
        )
        allow_edit: bool = Field(True, description="The person approving may edit the value.")
        timeout_seconds: int | None = Field(
            None,
            ge=60,
            le=MAX_TIMEOUT_SECONDS,
            description="Decide by itself after this long (empty: wait as long as it takes).",
        )
        on_timeout: Literal["reject", "approve"] = Field(
            "reject", description="The decision a timeout takes."
        )

    async def execute(
        self, built: Any, params: Approval.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        raise NodeError("An approval node is run by the engine.")  # never called
