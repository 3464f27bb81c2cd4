"""The runs HTTP API: start, read, events after a seq, SSE with Last-Event-ID, cancel, limits."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from django.test import Client

from audit.models import AuditEntry
from runs.models import Run, RunStatus
from tests import flowgraphs
from tests.live import free_port
from tests.wsclient import stored_log

pytestmark = pytest.mark.django_db(transaction=True)


def _api(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}", "content_type": "application/json"}


def _wait_finished(run_id: str, timeout: float = 30) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if run.is_finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


@pytest.mark.processes
def test_start_read_page_and_stream_a_run_over_http(
    live_stack, workspace_a, erin_editor, bob_viewer, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="one two three four", delay_ms=5)
    editor, viewer = token_for(workspace_a, erin_editor), token_for(workspace_a, bob_viewer)
    response = Client().post(
        f"/api/w/acme/flows/{flow.pk}/runs", json.dumps({"inputs": {"input": "hi"}}), **_api(editor)
    )
    assert response.status_code == 202, response.content
    run_id = response.json()["run_id"]
    assert response.json()["session_id"]
    run = _wait_finished(run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"output": "one two three four"}

    log = stored_log(run_id)
    detail = Client().get(f"/api/w/acme/runs/{run_id}", **_api(viewer)).json()
    assert detail["status"] == "succeeded" and detail["last_seq"] == len(log)
    page = Client().get(f"/api/w/acme/runs/{run_id}/events?after_seq=2&limit=3", **_api(viewer))
    body = page.json()
    assert body["events"] == log[2:5] and body["next_after_seq"] == 5 and not body["finished"]
    rest = Client().get(f"/api/w/acme/runs/{run_id}/events?after_seq=5", **_api(viewer)).json()
    assert rest["events"] == log[5:] and rest["finished"]

    # SSE resumes right after Last-Event-ID and ends with `completed`.
    with httpx.stream(
        "GET",
        f"{live_stack.http_url}/api/w/acme/runs/{run_id}/stream",
        headers={"Authorization": f"Bearer {viewer}", "Last-Event-ID": "3"},
        timeout=20,
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        ids, datas = [], []
        for line in stream.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("data: "):
                datas.append(json.loads(line[6:]))
    assert ids == list(range(4, len(log) + 1))
    assert datas == log[3:]


@pytest.mark.processes
def test_sse_follows_a_live_run_to_its_end(live_stack, workspace_a, erin_editor, token_for):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply=" w" * 40, delay_ms=20)
    token = token_for(workspace_a, erin_editor)
    run_id = (
        Client()
        .post(
            f"/api/w/acme/flows/{flow.pk}/runs",
            json.dumps({"inputs": {"input": "x"}}),
            **_api(token),
        )
        .json()["run_id"]
    )
    with httpx.stream(
        "GET",
        f"{live_stack.http_url}/api/w/acme/runs/{run_id}/stream",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as stream:
        received = [
            json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")
        ]
    assert received == stored_log(run_id)
    assert received[-1]["event"] == "completed"


@pytest.mark.processes
def test_cancel_over_http(live_stack, workspace_a, erin_editor, token_for):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply=" slow" * 300, delay_ms=30)
    token = token_for(workspace_a, erin_editor)
    run_id = (
        Client()
        .post(
            f"/api/w/acme/flows/{flow.pk}/runs",
            json.dumps({"inputs": {"input": "x"}}),
            **_api(token),
        )
        .json()["run_id"]
    )
    deadline = time.monotonic() + 20
    while Run.objects.get(pk=run_id).status != RunStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    response = Client().post(f"/api/w/acme/runs/{run_id}/cancel", **_api(token))
    assert response.status_code == 200
    run = _wait_finished(run_id)
    assert run.status == RunStatus.CANCELLED
    assert stored_log(run_id)[-1]["status"] == "cancelled"


def test_bad_run_requests_are_refused_and_change_nothing(
    workspace_a, workspace_b, erin_editor, bob_viewer, mallory_owner, token_for
):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="x", delay_ms=0)
    foreign = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="x", delay_ms=0)
    editor = token_for(workspace_a, erin_editor)
    cases = [
        (f"/api/w/acme/flows/{flow.pk}/runs", {"inputs": {"input": 42}}, editor, 400),
        (f"/api/w/acme/flows/{flow.pk}/runs", {"inputs": {"nope": "x"}}, editor, 400),
        (f"/api/w/acme/flows/{flow.pk}/runs", {"inputs": "text"}, editor, 422),
        (f"/api/w/acme/flows/{flow.pk}/runs", {"version": 99}, editor, 400),
        (f"/api/w/acme/flows/{foreign.pk}/runs", {}, editor, 404),
        (f"/api/w/acme/flows/{flow.pk}/runs", {}, token_for(workspace_a, bob_viewer), 403),
        (f"/api/w/acme/flows/{flow.pk}/runs", {}, "fdk_forged", 401),
    ]
    for path, body, token, status in cases:
        response = Client().post(path, json.dumps(body), **_api(token))
        assert response.status_code == status, (body, response.content)
        assert response.status_code != 500
    assert not Run.objects.exists()
    assert Client().get("/api/w/acme/runs/not-a-uuid", **_api(editor)).status_code == 404


def test_concurrent_runs_are_capped_per_workspace(workspace_a, erin_editor, token_for, settings):
    settings.FLOWDECK = {**settings.FLOWDECK, "MAX_CONCURRENT_RUNS_PER_WORKSPACE": 2}
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="x", delay_ms=0)
    version = flow.versions.get()
    for _ in range(2):
        Run.objects.create(
            workspace=workspace_a,
            flow=flow,
            flow_version=version,
            session_id="s",
            status=RunStatus.RUNNING,
        )
    response = Client().post(
        f"/api/w/acme/flows/{flow.pk}/runs",
        json.dumps({}),
        **_api(token_for(workspace_a, erin_editor)),
    )
    assert response.status_code == 429 and response.json()["code"] == "too_many_runs"
    assert Run.objects.count() == 2


@pytest.mark.parametrize(
    ("limit", "cache"),
    [
        ("RUNS_PER_MINUTE_PER_USER", "configured"),
        ("RUNS_PER_MINUTE_PER_WORKSPACE", "configured"),
        ("RUNS_PER_MINUTE_PER_USER", "locmem"),  # the counters' portable path
    ],
)
def test_run_starts_are_rate_limited(workspace_a, erin_editor, token_for, settings, limit, cache):
    settings.FLOWDECK = {**settings.FLOWDECK, limit: 2}
    if cache == "locmem":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="x", delay_ms=0)
    token = token_for(workspace_a, erin_editor)
    # The counters are per calendar minute: three starts that straddle a minute boundary
    # land in two windows. Start them where a boundary is far (this waits at most 10 s).
    while time.time() % 60 > 50:
        time.sleep(0.5)
    codes = [
        Client()
        .post(f"/api/w/acme/flows/{flow.pk}/runs", json.dumps({}), **_api(token))
        .status_code
        for _ in range(3)
    ]
    assert codes == [202, 202, 429]
    assert Run.objects.count() == 2
    # A live worker of the session may have picked them up: end them before teardown.
    for run in Run.objects.all():
        Client().post(f"/api/w/acme/runs/{run.pk}/cancel", **_api(token))
        _wait_finished(str(run.pk))


def test_a_run_start_while_redis_is_unreachable_is_a_503_and_writes_nothing(
    workspace_a, erin_editor, token_for, settings
):
    # The rate counters need Redis: a real client pointed at a port nothing listens on.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="x", delay_ms=0)
    token = token_for(workspace_a, erin_editor)
    response = Client().post(f"/api/w/acme/flows/{flow.pk}/runs", json.dumps({}), **_api(token))
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "unavailable"
    assert int(response["Retry-After"]) > 0
    assert not Run.objects.exists()
    assert not AuditEntry.objects.filter(action="run.start").exists()
