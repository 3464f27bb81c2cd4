"""A protocol client for tests: the `websockets` library speaking docs/protocol.md."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.typing import Origin

from runs.models import RunEvent


@dataclass
class Received:
    """Everything one logical client received for one run, across reconnects."""

    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    @property
    def completed(self) -> bool:
        return bool(self.events) and self.events[-1]["event"] == "completed"

    def add(self, message: dict[str, Any]) -> None:
        self.events.append(message)


async def connect(
    ws_url: str,
    slug: str,
    *,
    token: str,
    session: str | None = None,
    origin: str | None = "default",
    **kwargs: Any,
) -> tuple[Any, str]:
    """Open `/ws/w/<slug>/exec`; returns (socket, session id from the `session` reply)."""
    url = f"{ws_url}/ws/w/{slug}/exec" + (f"?session={session}" if session else "")
    headers = {"Authorization": f"Bearer {token}"}
    if origin == "default":
        origin = ws_url.replace("ws://", "http://")
    ws = await websockets.connect(
        url,
        additional_headers=headers,
        origin=Origin(origin) if origin is not None else None,
        open_timeout=10,
        **kwargs,
    )
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert hello["event"] == "session", hello
    return ws, hello["session_id"]


async def next_message(ws: Any, timeout: float = 20) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def start_run(ws: Any, message: dict[str, Any]) -> str:
    await ws.send(json.dumps(message))
    while True:
        reply = await next_message(ws)
        if reply["event"] == "accepted":
            return reply["run_id"]
        if reply["event"] == "rejected":
            raise AssertionError(f"run rejected: {reply}")


async def collect_until_completed(
    ws: Any, run_id: str, received: Received, *, timeout: float = 60
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not received.completed:
        message = await next_message(ws, max(0.1, deadline - loop.time()))
        if message.get("run_id") == run_id and "seq" in message:
            received.add(message)


async def follow_with_drops(
    ws_url: str,
    slug: str,
    token: str,
    run_message: dict[str, Any],
    *,
    drops: int,
    rng: random.Random,
    most: int = 12,
) -> tuple[str, Received]:
    """Start a run, then `drops` times read 1..`most` of its events and cut the connection
    abruptly (no closing handshake), reconnect to the same session and resume from the
    last seq held; then read to the end. (run id, everything received)."""
    received = Received()
    ws, session = await connect(ws_url, slug, token=token)
    run_id = await start_run(ws, run_message)
    for _drop in range(drops):
        for _ in range(rng.randint(1, most)):
            if received.completed:
                break
            message = await next_message(ws)
            if message.get("run_id") == run_id and "seq" in message:
                received.add(message)
        ws.transport.abort()
        await ws.close()
        ws, _ = await connect(ws_url, slug, token=token, session=session)
        await ws.send(
            json.dumps({"action": "resume", "run_id": run_id, "after_seq": received.last_seq})
        )
    await collect_until_completed(ws, run_id, received)
    await ws.close()
    return run_id, received


def stored_log(run_id: str) -> list[dict[str, Any]]:
    return [e.as_message() for e in RunEvent.objects.filter(run_id=run_id).order_by("seq")]


def assert_exactly_the_log(received: Received, run_id: str) -> list[dict[str, Any]]:
    """Seq 1..N, no gap, no duplicate, one `completed`, and equal to the stored log."""
    log = stored_log(run_id)
    seqs = [e["seq"] for e in received.events]
    assert seqs == list(range(1, len(log) + 1)), f"gaps or duplicates: {seqs[:50]}…"
    assert [e["event"] for e in received.events].count("completed") == 1
    assert received.events == log
    return log


def in_thread(fn: Any) -> Any:
    """Run a database call from async test code in a worker thread, then close that
    thread's connection (a lingering one would block dropping the test database)."""
    from asgiref.sync import sync_to_async
    from django.db import connection

    def call() -> Any:
        try:
            return fn()
        finally:
            connection.close()

    return sync_to_async(call, thread_sensitive=False)()


async def in_process_socket(slug: str, secret: str) -> Any:
    """The exec socket of workspace `slug` through Channels' WebsocketCommunicator (no
    server process), authenticated by an API token; returns it after its `session` reply."""
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"authorization", f"Bearer {secret}".encode()),
    ]
    communicator = WebsocketCommunicator(application, f"/ws/w/{slug}/exec", headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    assert (await communicator.receive_json_from(timeout=10))["event"] == "session"
    return communicator
