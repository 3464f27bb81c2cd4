"""A client's `request_id` comes back on the `accepted` or `rejected` its message caused,
so replies are matched by id, never by order."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from tests.conftest import make_user
from tests.wsclient import in_process_socket

pytestmark = pytest.mark.django_db(transaction=True)


def _world() -> tuple[str, int]:
    from accounts.services import api_token_create, workspace_create
    from tests import flowgraphs

    user = make_user("rid@example.com")
    workspace = workspace_create(name="Rid", slug="rid", owner=user)
    flow = flowgraphs.demo_flow(workspace, user, reply="x", delay_ms=0)
    return api_token_create(workspace=workspace, user=user, name="t").secret, flow.pk


async def _socket() -> tuple[WebsocketCommunicator, int]:
    secret, flow_id = await sync_to_async(_world)()
    return await in_process_socket("rid", secret), flow_id


async def _reply(communicator: WebsocketCommunicator, message: dict) -> dict:
    await communicator.send_to(text_data=json.dumps(message))
    while True:
        frame = await communicator.receive_json_from(timeout=20)
        if frame["event"] in {"accepted", "rejected"}:
            return frame


async def test_replies_carry_the_request_id_of_their_message():
    communicator, flow_id = await _socket()
    try:
        refused = await _reply(
            communicator, {"action": "cancel", "run_id": "no-such-run", "request_id": "c-1"}
        )
        assert refused["event"] == "rejected" and refused["request_id"] == "c-1"
        accepted = await _reply(
            communicator,
            {"action": "run", "flow": flow_id, "inputs": {"input": "hi"}, "request_id": 7},
        )
        assert accepted["event"] == "accepted" and accepted["request_id"] == 7
        unknown = await _reply(communicator, {"action": "nope", "request_id": "u-1"})
        assert unknown["code"] == "unknown_action" and unknown["request_id"] == "u-1"
        # A message without one gets a reply without one (no id from an earlier message).
        plain = await _reply(communicator, {"action": "cancel", "run_id": "no-such-run"})
        assert plain["event"] == "rejected" and "request_id" not in plain
        await communicator.send_to(text_data="{not json")
        bad_json = await communicator.receive_json_from(timeout=10)
        assert bad_json["code"] == "invalid_json" and "request_id" not in bad_json
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize("bad", [{"x": 1}, True, "", "r" * 65, 2**60])
async def test_a_malformed_request_id_is_refused(bad):
    communicator, _ = await _socket()
    try:
        reply = await _reply(communicator, {"action": "cancel", "run_id": "x", "request_id": bad})
        assert reply["code"] == "invalid_request" and "request_id" in reply["message"]
        assert "request_id" not in reply
    finally:
        await communicator.disconnect()
