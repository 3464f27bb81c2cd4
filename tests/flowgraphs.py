"""Small flows for run tests: chat input -> model -> text output."""

from __future__ import annotations

from typing import Any

from accounts.models import User, Workspace
from flows import crypto
from flows.models import Credential, Flow, FlowVersion
from flows.services import graph_checksum
from runs.models import Run


def _chain(model: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodes": [
            {
                "id": "input",
                "component": "io.chat_input",
                "params": {},
                "position": {"x": 0, "y": 0},
            },
            {**model, "id": "model", "position": {"x": 250, "y": 0}},
            {
                "id": "output",
                "component": "io.text_output",
                "params": {},
                "position": {"x": 500, "y": 0},
            },
        ],
        "edges": [
            {"source": "input", "source_port": "text", "target": "model", "target_port": "prompt"},
            {"source": "model", "source_port": "text", "target": "output", "target_port": "text"},
        ],
    }


def demo_graph(*, reply: str, delay_ms: int) -> dict[str, Any]:
    return _chain({"component": "llm.demo", "params": {"reply": reply, "delay_ms": delay_ms}})


def openai_graph(credential_id: int) -> dict[str, Any]:
    return _chain(
        {"component": "llm.openai_chat", "params": {"credential": credential_id, "model": "fake"}}
    )


def save_flow(workspace: Workspace, user: User, graph: dict[str, Any], name: str = "t") -> Flow:
    flow = Flow.objects.create(workspace=workspace, name=name, created_by=user)
    FlowVersion.objects.create(
        workspace=workspace,
        flow=flow,
        number=1,
        graph=graph,
        checksum=graph_checksum(graph),
        created_by=user,
    )
    return flow


def queued_run(
    workspace: Workspace, user: User, graph: dict[str, Any], inputs: dict[str, Any]
) -> Run:
    """A queued run of a new flow, created without enqueueing its task (the test executes
    it in-process; a live worker elsewhere in the session must not pick it up)."""
    flow = save_flow(workspace, user, graph)
    return Run.objects.create(
        workspace=workspace,
        flow=flow,
        flow_version=flow.versions.get(),
        session_id="s1",
        started_by=user,
        inputs=inputs,
    )


def demo_flow(workspace: Workspace, user: User, *, reply: str, delay_ms: int) -> Flow:
    return save_flow(workspace, user, demo_graph(reply=reply, delay_ms=delay_ms))


def openai_credential(
    workspace: Workspace, user: User, base_url: str, api_key: str = "sk-test"
) -> Credential:
    """An OpenAI-compatible credential of `workspace` for `base_url` (a fake provider)."""
    return Credential.objects.create(
        workspace=workspace,
        name=f"fake {base_url}",
        provider="openai",
        base_url=base_url,
        api_key_encrypted=crypto.encrypt(api_key),
        created_by=user,
    )


def openai_flow(workspace: Workspace, user: User, base_url: str) -> Flow:
    credential = openai_credential(workspace, user, base_url)
    return save_flow(workspace, user, openai_graph(credential.pk))
