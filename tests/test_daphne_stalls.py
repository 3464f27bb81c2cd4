"""One tenant's validate requests must not freeze Daphne for the others.

The template syntax check used to backtrack quadratically on `{{` followed by spaces
(1.8 s per node): three such nodes in one validate request held Daphne's GIL for seconds,
and another workspace's WebSocket stream paused for 7 s. Here a normal run of workspace A
streams over a real Daphne while workspace B sends such validate requests; the longest gap
between A's token events and the time B's requests take are bounded far above scheduling
noise and far below what the backtracking check cost.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests import flowgraphs
from tests.wsclient import connect, next_message, start_run

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

GAP_BOUND = 1.0  # seconds between two token events of a run streaming one every 40 ms
HOSTILE_TEMPLATE = "{{" + " " * 19_990


def _hostile_graph() -> dict:
    nodes = [
        {
            "id": f"p{i}",
            "component": "prompt.template",
            "params": {"template": HOSTILE_TEMPLATE},
            "position": {"x": 0, "y": 0},
        }
        for i in range(3)
    ]
    return {"nodes": nodes, "edges": []}


def test_a_stream_of_another_workspace_keeps_flowing_while_hostile_templates_validate(
    live_stack, workspace_a, erin_editor, workspace_b, mallory_owner, token_for
):
    flow = flowgraphs.demo_flow(
        workspace_a, erin_editor, reply=" ".join(f"w{i}" for i in range(60)), delay_ms=40
    )
    erin = token_for(workspace_a, erin_editor)
    mallory = token_for(workspace_b, mallory_owner)
    statuses: list[int] = []

    def hostile() -> None:
        with httpx.Client(base_url=live_stack.http_url, timeout=60) as http:
            for _ in range(3):
                response = http.post(
                    "/api/w/bravo/flows/validate",
                    json={"graph": _hostile_graph()},
                    headers={"Authorization": f"Bearer {mallory}"},
                )
                statuses.append(response.status_code)

    async def scenario() -> list[float]:
        ws, _ = await connect(live_stack.ws_url, "acme", token=erin)
        run_id = await start_run(ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "x"}})
        arrivals: list[float] = []
        attackers = [threading.Thread(target=hostile) for _ in range(2)]
        started = False
        while True:
            message = await next_message(ws, 30)
            if message.get("run_id") != run_id or "seq" not in message:
                continue
            if message["event"] == "on_token":
                arrivals.append(time.monotonic())
                if not started:
                    started = True
                    for thread in attackers:
                        thread.start()
            if message["event"] == "completed":
                break
        await ws.close()
        for thread in attackers:
            thread.join()
        return arrivals

    arrivals = asyncio.run(scenario())
    assert statuses == [200] * 6  # the hostile requests were answered, not refused
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(arrivals) > 10
    assert max(gaps) < GAP_BOUND, f"the stream paused {max(gaps):.2f} s"
