"""A conversation end to end with real processes (Daphne, a Celery worker, Redis, the
database) and the fake provider as a real HTTP server: turns started through the one-call
run API with `conversation_id` remember the turns before them, and only those."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.fakes.fake_openai import FakeOpenAIServer
from tests.flowgraphs import save_flow
from tests.wsclient import stored_log

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def _reply(body: dict) -> str:
    """A model that knows a name only if the prompt it gets holds one."""
    prompt = str(body["messages"][-1]["content"])
    asked = prompt.strip().splitlines()[-1]
    if "what is my name" not in asked.lower():
        return "Noted."
    told = re.search(r"my name is (\w+)", prompt, re.IGNORECASE)
    return f"Your name is {told.group(1)}." if told else "I do not know your name."


def _memory_chatbot(credential_id: int) -> dict[str, Any]:
    """input -> memory (user) -> "{history} User: {message}" -> model -> memory (assistant)
    -> output: the chatbot shape, both memory nodes on one conversation name."""

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
            node("heard", "memory.conversation", {"conversation": "chat", "role": "user"}),
            node("prompt", "prompt.template", {"template": "{history}\nUser: {message}"}),
            node("model", "llm.openai_chat", {"credential": credential_id, "model": "fake"}),
            node("said", "memory.conversation", {"conversation": "chat", "role": "assistant"}),
            node("output", "io.text_output", {}),
        ],
        "edges": [
            edge("input", "text", "heard", "message"),
            edge("heard", "history", "prompt", "history"),
            edge("heard", "message", "prompt", "message"),
            edge("prompt", "prompt", "model", "prompt"),
            edge("model", "text", "said", "message"),
            edge("said", "message", "output", "text"),
        ],
    }


def test_turn_three_remembers_turn_one_and_another_conversation_does_not(
    live_stack, workspace_a, erin_editor, token_for
):
    from flows import crypto
    from flows.models import Credential

    with FakeOpenAIServer(reply=_reply) as fake:
        credential = Credential.objects.create(
            workspace=workspace_a,
            name="fake",
            provider="openai",
            base_url=fake.base_url,
            api_key_encrypted=crypto.encrypt("sk-test"),
            created_by=erin_editor,
        )
        flow = save_flow(workspace_a, erin_editor, _memory_chatbot(credential.pk), name="Bot")
        api = httpx.Client(
            base_url=f"{live_stack.http_url}/api/w/acme",
            headers={"Authorization": f"Bearer {token_for(workspace_a, erin_editor)}"},
            timeout=120,
        )

        def start() -> str:
            created = api.post(f"/flows/{flow.pk}/conversations", json={})
            assert created.status_code == 201, created.text
            return str(created.json()["id"])

        def say(conversation_id: str, text: str) -> dict[str, Any]:
            response = api.post(
                f"/flows/{flow.pk}/run",
                json={"inputs": {"input": text}, "version": 1, "conversation_id": conversation_id},
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        sam = start()
        assert say(sam, "My name is Sam.")["outputs"] == {"output": "Noted."}
        assert say(sam, "I like tea.")["outputs"] == {"output": "Noted."}
        third = say(sam, "What is my name?")
        assert third["status"] == "succeeded" and third["outputs"] == {
            "output": "Your name is Sam."
        }

        # Turn 3's memory held turns 1 and 2, the user's inputs and the flow's answers.
        heard = [
            e["data"]["history"]
            for e in stored_log(third["run_id"])
            if e["event"] == "node_finished" and e["node_id"] == "heard"
        ]
        assert heard == [
            "User: My name is Sam.\nAssistant: Noted.\nUser: I like tea.\nAssistant: Noted."
        ]

        # Another conversation with the same flow starts with an empty memory.
        other = start()
        assert say(other, "What is my name?")["outputs"] == {"output": "I do not know your name."}

        detail = api.get(f"/conversations/{sam}").json()
        assert detail["title"] == "My name is Sam."
        assert [(t["number"], t["inputs"]["input"], t["answer"]) for t in detail["turn_list"]] == [
            (1, "My name is Sam.", "Noted."),
            (2, "I like tea.", "Noted."),
            (3, "What is my name?", "Your name is Sam."),
        ]
        assert detail["turn_list"][2]["run_id"] == third["run_id"]
        found = api.get("/conversations", params={"q": "your name is sam"}).json()
        assert [c["id"] for c in found] == [sam]


def test_turns_started_over_the_socket_are_the_conversations_and_stream_exactly(
    live_stack, workspace_a, erin_editor, token_for
):
    """The playground's path: `{"action": "run", "conversation"}` on the exec socket runs
    the next turn in the conversation's session (memory holds turn 1 at turn 2), and the
    socket that started it receives exactly its log, though the run is in another session."""
    import asyncio
    import json

    from flows import crypto
    from flows.models import Credential
    from tests.wsclient import (
        Received,
        assert_exactly_the_log,
        collect_until_completed,
        connect,
        start_run,
    )

    with FakeOpenAIServer(reply=_reply) as fake:
        credential = Credential.objects.create(
            workspace=workspace_a,
            name="fake",
            provider="openai",
            base_url=fake.base_url,
            api_key_encrypted=crypto.encrypt("sk-test"),
            created_by=erin_editor,
        )
        flow = save_flow(workspace_a, erin_editor, _memory_chatbot(credential.pk), name="Bot")
        token = token_for(workspace_a, erin_editor)
        api = httpx.Client(
            base_url=f"{live_stack.http_url}/api/w/acme",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        created = api.post(f"/flows/{flow.pk}/conversations", json={})
        assert created.status_code == 201, created.text
        conversation = str(created.json()["id"])

        async def turns() -> list[str]:
            ws, _session = await connect(live_stack.ws_url, "acme", token=token)
            run_ids = []
            try:
                for text in ["My name is Ada.", "What is my name?"]:
                    run_id = await start_run(
                        ws,
                        {
                            "action": "run",
                            "flow": flow.pk,
                            "inputs": {"input": text},
                            "conversation": conversation,
                        },
                    )
                    received = Received()
                    await collect_until_completed(ws, run_id, received)
                    await asyncio.to_thread(assert_exactly_the_log, received, run_id)
                    run_ids.append(run_id)
                # Another flow's conversation id is refused, nothing runs.
                missing = "00000000-0000-0000-0000-000000000000"
                await ws.send(
                    json.dumps(
                        {
                            "action": "run",
                            "flow": flow.pk,
                            "inputs": {"input": "x"},
                            "conversation": missing,
                        }
                    )
                )
                while (reply := json.loads(await ws.recv()))["event"] != "rejected":
                    pass
                assert reply["code"] == "not_found", reply
            finally:
                await ws.close()
            return run_ids

        run_ids = asyncio.run(turns())
        detail = api.get(f"/conversations/{conversation}").json()
        assert [(t["run_id"], t["answer"]) for t in detail["turn_list"]] == [
            (run_ids[0], "Noted."),
            (run_ids[1], "Your name is Ada."),
        ]
