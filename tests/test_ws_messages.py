"""WebSocket messages are checked by the same pydantic schemas as the HTTP API
(runs/schemas.py): strict types, unknown keys refused, one `rejected` code per kind of
mistake, the socket open afterwards and nothing written."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.api_auth import MAX_DB_INT
from runs import schemas
from runs.models import Run
from tests.conftest import make_user
from tests.wsclient import in_process_socket


@pytest.mark.parametrize(
    ("content", "code", "says"),
    [
        ([], "invalid_message", "JSON object"),
        ({"action": "explode"}, "unknown_action", "replay_play"),
        ({"action": ["run"]}, "unknown_action", "Unknown action"),
        ({"run_id": "x"}, "unknown_action", "Unknown action"),
        ({"action": "run", "flow": True}, "invalid_request", "`flow`"),
        ({"action": "run", "flow": "1"}, "invalid_request", "`flow`"),
        ({"action": "run", "flow": -1}, "invalid_request", "`flow`"),
        ({"action": "run", "flow": 1, "version": MAX_DB_INT + 1}, "invalid_request", "`version`"),
        ({"action": "run", "flow": 1, "inputs": "rm -rf /"}, "invalid_inputs", "`inputs`"),
        ({"action": "run", "flow": 1, "flwo": 2}, "invalid_request", "`flwo` is not part"),
        ({"action": "resume"}, "invalid_request", "`run_id`"),
        ({"action": "resume", "run_id": "x" * 65}, "invalid_request", "`run_id`"),
        ({"action": "resume", "run_id": "r", "after_seq": -1}, "invalid_request", "`after_seq`"),
        ({"action": "resume", "run_id": "r", "after_seq": 1.5}, "invalid_request", "`after_seq`"),
        ({"action": "cancel", "run_id": 7}, "invalid_request", "`run_id`"),
        ({"action": "rerun", "run_id": "r", "from_node": ""}, "invalid_request", "`from_node`"),
        ({"action": "replay", "run_id": "r", "speed": 1000}, "invalid_request", "`speed`"),
        ({"action": "replay", "run_id": "r", "speed": "fast"}, "invalid_request", "`speed`"),
        ({"action": "replay", "run_id": "r", "speed": False}, "invalid_request", "`speed`"),
        ({"action": "replay_pause", "run_id": "r"}, "invalid_request", "`run_id` is not part"),
        ({"nodes": [], "inputs": ["x"]}, "invalid_inputs", "`inputs`"),
        ({"nodes": [], "flow": "mine"}, "invalid_request", "`flow`"),
    ],
)
def test_a_message_outside_the_protocol_is_refused_with_its_code(content, code, says):
    with pytest.raises(schemas.MessageRefused) as refused:
        schemas.parse_message(content)
    assert refused.value.code == code
    assert says in refused.value.message


def test_each_action_parses_into_its_message():
    assert schemas.parse_message({"nodes": [], "edges": []}).action == "graph"
    run = schemas.parse_message({"action": "run", "flow": 3, "inputs": {"input": "hi"}})
    assert isinstance(run, schemas.RunMessage) and run.flow == 3 and run.version is None
    replay = schemas.parse_message({"action": "replay", "run_id": "r", "speed": "instant"})
    assert isinstance(replay, schemas.ReplayMessage) and replay.speed == "instant"
    assert schemas.parse_message({"action": "replay", "run_id": "r", "speed": 4}).speed == 4
    resume = schemas.parse_message({"action": "resume", "run_id": "r", "request_id": 9})
    assert resume.after_seq == 0 and resume.request_id == 9


def test_the_socket_and_the_api_share_the_run_request_schema():
    """A field added to what starting a run takes reaches both doors at once."""
    assert issubclass(schemas.RunMessage, schemas.RunRequest)
    assert issubclass(schemas.RunStartIn, schemas.RunRequest)
    assert issubclass(schemas.RerunMessage, schemas.RerunRequest)
    assert issubclass(schemas.RerunIn, schemas.RerunRequest)


def _world() -> tuple[str, int]:
    from accounts.services import api_token_create, workspace_create
    from tests import flowgraphs

    user = make_user("msg@example.com")
    workspace = workspace_create(name="Msg", slug="msg", owner=user)
    flow = flowgraphs.demo_flow(workspace, user, reply="x", delay_ms=0)
    return api_token_create(workspace=workspace, user=user, name="t").secret, flow.pk


async def _reply(communicator: WebsocketCommunicator, message: dict) -> dict:
    await communicator.send_to(text_data=json.dumps(message))
    while True:
        frame = await communicator.receive_json_from(timeout=20)
        if frame["event"] in {"accepted", "rejected"}:
            return frame


@pytest.mark.django_db(transaction=True)
async def test_refused_messages_change_nothing_and_the_socket_keeps_serving():
    secret, flow_id = await sync_to_async(_world)()
    communicator = await in_process_socket("msg", secret)
    try:
        refused = [
            await _reply(communicator, {"action": "run", "flow": flow_id, "version": "1"}),
            await _reply(communicator, {"action": "run", "flow": flow_id, "inputs": [1]}),
            await _reply(
                communicator, {"action": "run", "flow": flow_id, "request_id": "r1", "x": 1}
            ),
        ]
        assert [r["code"] for r in refused] == [
            "invalid_request",
            "invalid_inputs",
            "invalid_request",
        ]
        assert refused[2]["request_id"] == "r1"  # refusals carry the id of their message
        assert await sync_to_async(Run.objects.count)() == 0
        accepted = await _reply(
            communicator, {"action": "run", "flow": flow_id, "inputs": {"input": "hi"}}
        )
        assert accepted["event"] == "accepted"
    finally:
        await communicator.disconnect()
