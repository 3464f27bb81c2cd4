"""The fake LLM server (tests/fakes/fake_openai.py) speaks the OpenAI streaming protocol
faithfully, holds many concurrent streams, and runs as a separate process from its CLI."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.fakes.fake_openai import FakeOpenAIServer, split_tokens


def test_split_tokens_keeps_leading_spaces_and_joins_back():
    assert split_tokens("Hello there  world") == ["Hello", " there", "  world"]
    assert "".join(split_tokens(" a b ")) == " a b "


def test_streams_sse_chunks_then_done():
    with (
        FakeOpenAIServer(reply="a b") as server,
        httpx.stream(
            "POST",
            f"{server.base_url}/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "a b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert server.requests[0]["model"] == "m"


def test_non_streaming_reply_and_reply_function():
    with FakeOpenAIServer(reply=lambda body: body["messages"][-1]["content"].upper()) as server:
        response = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "shout"}]},
        )
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "SHOUT"


def test_holds_sixty_concurrent_streams():
    """Sixty streams in progress at once, shown without a clock: the reply is computed
    inside the server's handler of each request, and there it waits on a barrier of sixty.
    Only a server handling all sixty requests at the same time gets past it; one that
    served them one after another (or a few at a time) would leave the barrier waiting
    until its safety timeout broke it, and every stream would fail."""
    text = "".join(f" t{i}" for i in range(20))
    together = threading.Barrier(60)

    def reply(body: dict) -> str:
        together.wait(timeout=30)  # a safety net only: it fails the test, never passes it
        return text

    async def one(client: httpx.AsyncClient, url: str) -> str:
        parts = []
        async with client.stream(
            "POST", url, json={"model": "m", "stream": True, "messages": []}
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    parts.append(delta.get("content") or "")
        return "".join(parts)

    async def main(url: str) -> list[str]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=90) as client:
            return await asyncio.gather(*(one(client, url) for _ in range(60)))

    with FakeOpenAIServer(reply=reply, delay=0.02) as server:
        results = asyncio.run(main(f"{server.base_url}/chat/completions"))
    assert not together.broken
    assert results == [text] * 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_runs_as_a_separate_process_from_its_cli():
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.fake_openai",
            "--port",
            str(port),
            "--tokens",
            "3",
            "--delay",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,  # test code: importable from the checkout
    )
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "m", "messages": []}
        )
        assert response.json()["choices"][0]["message"]["content"] == " tok0 tok1 tok2"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("status", [401, 500])
def test_scripted_failures(status):
    with FakeOpenAIServer(fail_status=status) as server:
        response = httpx.post(f"{server.base_url}/chat/completions", json={"messages": []})
    assert response.status_code == status
