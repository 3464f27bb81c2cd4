"""Calling a published flow from outside, end to end with real processes (Daphne, a Celery
worker, Redis, the database) and the fake provider as a real HTTP server: the official
`openai` SDK and LangChain's ChatOpenAI pointed at the OpenAI-compatible endpoint, and the
one-call run API (waiting, streaming, resuming after a drop, timing out)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from django.utils import timezone

from accounts.models import Membership
from chat.models import Publication
from chat.services import flow_publish
from runs.models import Run, RunStatus
from tests import flowgraphs
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.wsclient import stored_log

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

TOKENS = [f" tok{i}" for i in range(60)]


@pytest.fixture
def fake_llm():
    with FakeOpenAIServer(tokens=TOKENS, delay=0.002) as server:
        yield server


def _publish(flow: Any, user: Any, version: int = 1) -> Publication:
    acting = Membership.objects.get(workspace=flow.workspace, user=user)
    return flow_publish(workspace=flow.workspace, acting=acting, flow=flow, version_number=version)


def _logged_answer(run_id: str) -> str:
    """The text the run's log holds as its answer: the output node's `node_finished`."""
    finished = [
        e for e in stored_log(run_id) if e["event"] == "node_finished" and e["node_id"] == "output"
    ]
    assert len(finished) == 1
    return finished[0]["data"]


def _logged_tokens(run_id: str, node_id: str = "model") -> list[str]:
    return [
        e["data"]
        for e in stored_log(run_id)
        if e["event"] == "on_token" and e["node_id"] == node_id
    ]


def _run_of(completion_id: str) -> Run:
    return Run.objects.get(pk=completion_id.removeprefix("chatcmpl-"))


def test_the_openai_sdk_gets_the_text_the_flows_log_holds(
    live_stack, workspace_a, erin_editor, alice_owner, token_for, fake_llm
):
    flow = flowgraphs.openai_flow(workspace_a, erin_editor, fake_llm.base_url)
    flow.name = "Fake bot"
    flow.save()
    model = _publish(flow, alice_owner).model_name
    client = openai.OpenAI(
        base_url=f"{live_stack.http_url}/api/w/acme/v1",
        api_key=token_for(workspace_a, erin_editor),
        max_retries=0,
    )
    assert [m.id for m in client.models.list()] == [model] == ["fake-bot"]

    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}]
    )
    run = _run_of(completion.id)
    assert run.status == RunStatus.SUCCEEDED and run.flow_id == flow.pk
    assert completion.object == "chat.completion" and completion.model == model
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == _logged_answer(str(run.pk)) == "".join(TOKENS)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(TOKENS)
    assert completion.usage.prompt_tokens == fake_llm.reported_usage[-1]["prompt_tokens"] > 0

    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "earlier"},
                {"role": "assistant", "content": "noted"},
                {"role": "user", "content": "hello again"},
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    run = _run_of(chunks[0].id)
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-2].choices[0].finish_reason == "stop"
    contents = [c.choices[0].delta.content for c in chunks[1:-2] if c.choices[0].delta.content]
    # The deltas are the model node's logged token events, one for one.
    assert contents == _logged_tokens(str(run.pk))
    assert "".join(contents) == _logged_answer(str(run.pk)) == "".join(TOKENS)
    assert run.inputs == {"input": "hello again"}


def test_the_stream_is_openais_wire_format_to_done(
    live_stack, workspace_a, erin_editor, alice_owner, token_for, fake_llm
):
    flow = flowgraphs.openai_flow(workspace_a, erin_editor, fake_llm.base_url)
    model = _publish(flow, alice_owner).model_name
    with httpx.stream(
        "POST",
        f"{live_stack.http_url}/api/w/acme/v1/chat/completions",
        headers={"Authorization": f"Bearer {token_for(workspace_a, erin_editor)}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        run_id = response.headers["x-flowdeck-run-id"]
        lines = [line for line in response.iter_lines() if line]
    datas = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert all(line.startswith(("data: ", ":")) for line in lines)
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all("usage" not in c for c in chunks)  # only when asked
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == _logged_answer(run_id)


def test_langchain_chatopenai_streams_through_the_endpoint(
    live_stack, workspace_a, erin_editor, alice_owner, token_for, fake_llm
):
    from langchain_openai import ChatOpenAI

    flow = flowgraphs.openai_flow(workspace_a, erin_editor, fake_llm.base_url)
    model = _publish(flow, alice_owner).model_name
    chat = ChatOpenAI(
        model=model,
        base_url=f"{live_stack.http_url}/api/w/acme/v1",
        api_key=token_for(workspace_a, erin_editor),
        max_retries=0,
    )
    pieces = [chunk.content for chunk in chat.stream("hello from langchain")]
    run = Run.objects.get(inputs={"input": "hello from langchain"})
    assert "".join(str(p) for p in pieces) == _logged_answer(str(run.pk)) == "".join(TOKENS)
    assert chat.invoke("and once more").content == "".join(TOKENS)


def test_a_failed_run_is_an_openai_error_and_not_retried(
    live_stack, workspace_a, erin_editor, alice_owner, token_for
):
    # The credential points at a port where nothing listens: the model node fails.
    with FakeOpenAIServer() as gone:
        base_url = gone.base_url
    flow = flowgraphs.openai_flow(workspace_a, erin_editor, base_url)
    model = _publish(flow, alice_owner).model_name
    client = openai.OpenAI(
        base_url=f"{live_stack.http_url}/api/w/acme/v1",
        api_key=token_for(workspace_a, erin_editor),
        max_retries=2,
    )
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 502
    assert raised.value.body["code"] == "flow_failed"  # type: ignore[index]
    assert Run.objects.count() == 1  # x-should-retry: false, so the SDK started no second run
    with pytest.raises(openai.APIError):
        list(
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    assert Run.objects.filter(status=RunStatus.FAILED).count() == 2


# --- the one-call run API ---------------------------------------------------------------
def _run_call(stack: Any, token: str, flow_id: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{stack.http_url}/api/w/acme/flows/{flow_id}/run",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
        timeout=60,
    )


def test_one_call_runs_the_published_version_unless_one_is_named(
    live_stack, workspace_a, erin_editor, alice_owner, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="first answer", delay_ms=0)
    from tests.test_chat_publish import _add_version

    _add_version(flow, flowgraphs.demo_graph(reply="second answer", delay_ms=0))
    token = token_for(workspace_a, erin_editor)
    refused = _run_call(live_stack, token, flow.pk, {"inputs": {"input": "hi"}})
    assert refused.status_code == 409 and refused.json()["code"] == "not_published"

    _publish(flow, alice_owner, version=1)
    answer = _run_call(live_stack, token, flow.pk, {"inputs": {"input": "hi"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {
        "run_id": body["run_id"],
        "status": "succeeded",
        "outputs": {"output": "first answer"},
    }
    assert answer.headers["x-flowdeck-run-id"] == body["run_id"]
    run = Run.objects.get(pk=body["run_id"])
    assert run.outputs == body["outputs"] and run.flow_version.number == 1
    assert stored_log(body["run_id"])[-1]["event"] == "completed"

    named = _run_call(live_stack, token, flow.pk, {"inputs": {"input": "hi"}, "version": 2})
    assert named.json()["outputs"] == {"output": "second answer"}


def test_one_call_stream_resumes_after_a_drop(
    live_stack, workspace_a, erin_editor, alice_owner, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply=" w" * 60, delay_ms=15)
    _publish(flow, alice_owner)
    token = token_for(workspace_a, erin_editor)
    received: list[dict[str, Any]] = []
    ids: list[int] = []
    with httpx.stream(
        "POST",
        f"{live_stack.http_url}/api/w/acme/flows/{flow.pk}/run",
        headers={"Authorization": f"Bearer {token}"},
        json={"inputs": {"input": "go"}, "stream": True},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        run_id = response.headers["x-flowdeck-run-id"]
        for line in response.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("data: "):
                received.append(json.loads(line[6:]))
                if len(received) == 5:
                    break  # the client drops the connection mid-run
    assert ids == [1, 2, 3, 4, 5]
    with httpx.stream(
        "GET",
        f"{live_stack.http_url}/api/w/acme/runs/{run_id}/stream",
        headers={"Authorization": f"Bearer {token}", "Last-Event-ID": str(ids[-1])},
        timeout=60,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
    log = stored_log(run_id)
    assert received == log  # every event once, in order, across the drop
    assert log[-1]["event"] == "completed" and log[-1]["status"] == "success"


def test_one_call_timeout_is_a_504_naming_the_run_which_keeps_going(
    live_stack, workspace_a, erin_editor, alice_owner, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply=" slow" * 40, delay_ms=50)
    _publish(flow, alice_owner)
    token = token_for(workspace_a, erin_editor)
    response = _run_call(live_stack, token, flow.pk, {"inputs": {"input": "x"}, "timeout": 0.2})
    assert response.status_code == 504
    body = response.json()
    assert body["code"] == "timeout" and body["run_id"] in body["message"]
    deadline = time.monotonic() + 60
    run = Run.objects.get(pk=body["run_id"])
    while not run.is_finished and time.monotonic() < deadline:
        time.sleep(0.1)
        run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.finished_at is not None and run.finished_at <= timezone.now()


def _memory_graph() -> dict[str, Any]:
    """input -> conversation memory (the user's turn) -> "{history}" -> demo model -> output:
    the demo model echoes its prompt's last line, so the answer shows the history it got."""

    def node(node_id: str, component: str, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": node_id,
            "component": component,
            "params": params,
            "position": {"x": 0, "y": 0},
        }

    def edge(source: str, source_port: str, target: str, target_port: str) -> dict[str, str]:
        return {
            "source": source,
            "source_port": source_port,
            "target": target,
            "target_port": target_port,
        }

    return {
        "nodes": [
            node("input", "io.chat_input", {}),
            node("memory", "memory.conversation", {"conversation": "chat", "role": "user"}),
            node("prompt", "prompt.template", {"template": "{history}"}),
            node("model", "llm.demo", {"delay_ms": 0}),
            node("output", "io.text_output", {}),
        ],
        "edges": [
            edge("input", "text", "memory", "message"),
            edge("memory", "history", "prompt", "history"),
            edge("prompt", "prompt", "model", "prompt"),
            edge("model", "text", "output", "text"),
        ],
    }


def test_earlier_messages_reach_the_flows_conversation_memory(
    live_stack, workspace_a, erin_editor, alice_owner, token_for
):
    flow = flowgraphs.save_flow(workspace_a, erin_editor, _memory_graph(), name="Remembers")
    model = _publish(flow, alice_owner).model_name
    client = openai.OpenAI(
        base_url=f"{live_stack.http_url}/api/w/acme/v1",
        api_key=token_for(workspace_a, erin_editor),
        max_retries=0,
    )
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "Call me Countess."},
        {"role": "user", "content": "What is my name?"},
    ]
    answer = client.chat.completions.create(model=model, messages=chat)
    assert answer.choices[0].message.content == "(demo model) You said: User: Call me Countess."
    memory = [
        e
        for e in stored_log(str(_run_of(answer.id).pk))
        if e["event"] == "node_finished" and e["node_id"] == "memory"
    ]
    assert memory[0]["data"]["history"] == (
        "System: Be brief.\nUser: My name is Ada.\nAssistant: Hello Ada.\nUser: Call me Countess."
    )
    first_turn = client.chat.completions.create(model=model, messages=chat[-1:])
    assert first_turn.choices[0].message.content == "(demo model) Hello!"  # no history: none
