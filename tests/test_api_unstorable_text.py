"""Text that cannot be stored (a lone surrogate, a NUL) is a clear 400 on every API
operation with a body and a `rejected` on the socket; nothing is written. Numbers beyond
the database's 64-bit range are refused by the schema (422), never an OverflowError."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from ninja.params.models import BodyModel

from accounts.models import Membership
from audit.models import AuditEntry
from config.api import api
from flows import services as flow_services
from flows.models import Credential, Flow, FlowVersion
from knowledge.models import KnowledgeDocument
from runs.models import Run

pytestmark = pytest.mark.django_db

SURROGATE = '"\\ud800"'
NUL = '"a\\u0000b"'


def _body_operations() -> list[tuple[str, str]]:
    found = []
    for _prefix, router in api._routers:
        for path, path_view in router.path_operations.items():
            for operation in path_view.operations:
                takes_body = any(issubclass(m, BodyModel) for m in operation.models)
                for method in operation.methods:
                    if takes_body and method in {"POST", "PUT"}:
                        found.append((method, path))
    return found


OPERATIONS = _body_operations()


def _url(path: str, flow_id: int) -> str:
    path = path.replace("{int:flow_id}", str(flow_id)).replace("{flow_id}", str(flow_id))
    path = path.replace("{credential_id}", "1").replace("{run_id}", "0" * 32)
    return f"/api/w/acme/{path}"


def _counts() -> tuple[int, ...]:
    return tuple(
        m.objects.count()
        for m in (Flow, FlowVersion, Credential, KnowledgeDocument, Run, AuditEntry)
    )


@pytest.mark.parametrize("bad", [SURROGATE, NUL], ids=["lone-surrogate", "nul"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_unstorable_text_in_any_body_is_a_clear_400_and_changes_nothing(
    workspace_a, alice_owner, token_for, method, path, bad
):
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    flow = flow_services.flow_create(workspace=workspace_a, acting=acting, name="f")
    secret = token_for(workspace_a, alice_owner)
    before = _counts()
    body = (
        '{"name": BAD, "title": BAD, "content": BAD, "inputs": {"input": BAD}, '
        '"graph": {"nodes": [], "edges": []}, "api_key": BAD, BAD: 1}'
    ).replace("BAD", bad)
    client = Client(raise_request_exception=False)
    response = getattr(client, method.lower())(
        _url(path, flow.pk),
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 400, response.content[:300]
    detail = response.json()["detail"]
    assert "surrogate" in detail or "NUL" in detail
    assert _counts() == before


@pytest.mark.parametrize(
    "url",
    [
        "/api/w/acme/runs?flow=9223372036854775808",
        "/api/w/acme/flows/9223372036854775808",
        "/api/w/acme/runs/x/events?after_seq=9223372036854775808",
    ],
)
def test_numbers_beyond_64_bits_are_refused_by_the_schema(workspace_a, alice_owner, token_for, url):
    secret = token_for(workspace_a, alice_owner)
    client = Client(raise_request_exception=False)
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 422, response.content[:300]


@pytest.mark.django_db(transaction=True)
async def test_a_socket_frame_with_a_lone_surrogate_is_rejected_and_the_socket_stays_open():
    from asgiref.sync import sync_to_async

    from accounts.services import api_token_create, workspace_create
    from tests.conftest import make_user
    from tests.wsclient import in_process_socket

    def world() -> str:
        user = make_user("sock@example.com")
        workspace = workspace_create(name="Sock", slug="sock", owner=user)
        return api_token_create(workspace=workspace, user=user, name="t").secret

    communicator = await in_process_socket("sock", await sync_to_async(world)())
    await communicator.send_to(
        text_data='{"action": "run", "flow": 1, "inputs": {"input": "\\ud800"}}'
    )
    reply = await communicator.receive_json_from(timeout=10)
    assert reply["event"] == "rejected" and reply["code"] == "invalid_text"
    await communicator.send_to(text_data=json.dumps({"action": "nope"}))
    again = await communicator.receive_json_from(timeout=10)
    assert again["event"] == "rejected" and again["code"] != "invalid_text"  # still open
    await communicator.disconnect()
