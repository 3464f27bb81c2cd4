"""A node's policy at run time (flows.policy): retries with backoff, a timeout, and what a
failure does (stop, the error port, a fallback value), executed in-process with the real
sink and database against the fake provider (a real local HTTP server)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from accounts.models import Membership
from flows.models import Credential
from flows.policy import MAX_BACKOFF_SECONDS, NodePolicy, backoff_delay
from runs import services
from runs.engine.executor import execute_claimed_run
from runs.models import Run, RunStatus
from runs.selectors import compare_runs
from tests import flowgraphs
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.wsclient import stored_log

pytestmark = pytest.mark.django_db(transaction=True)

REPLY_TOKENS = [" The", " third", " answer"]


def _credential(workspace, user, server: FakeOpenAIServer) -> Credential:
    return flowgraphs.openai_credential(workspace, user, server.base_url, "sk-test-secret")


def _graph(credential: Credential, policy: dict[str, Any] | None) -> dict[str, Any]:
    graph = flowgraphs.openai_graph(credential.pk)
    if policy is not None:
        graph["nodes"][1]["policy"] = policy
    return graph


def _execute(workspace, user, graph: dict[str, Any]) -> tuple[Run, list[dict[str, Any]]]:
    run = flowgraphs.queued_run(workspace, user, graph, {"input": "hi"})
    execute_claimed_run(services.run_claim(run_id=str(run.pk), task_id="t", worker="w"))
    return Run.objects.get(pk=run.pk), stored_log(str(run.pk))


def _rerun_from(run: Run, node_id: str) -> Run:
    """Re-run `run` from `node_id`, executed here (the row as `runs.services.run_rerun`
    makes it, without a task a live worker could take)."""
    rerun = Run.objects.create(
        workspace=run.workspace,
        flow=run.flow,
        flow_version=run.flow_version,
        session_id=run.session_id,
        started_by=run.started_by,
        inputs=run.inputs,
        rerun_of=run,
        rerun_from_node=node_id,
    )
    execute_claimed_run(services.run_claim(run_id=str(rerun.pk), task_id="t", worker="w"))
    return Run.objects.get(pk=rerun.pk)


def _of(log: list[dict[str, Any]], node_id: str) -> list[dict[str, Any]]:
    return [e for e in log if e["node_id"] == node_id]


def _chat_requests(server: FakeOpenAIServer) -> int:
    return sum(path.endswith("/chat/completions") for path in server.paths)


def test_a_node_failing_twice_with_503_is_retried_and_answers_with_the_third_attempt(
    workspace_a, erin_editor
):
    with FakeOpenAIServer(tokens=REPLY_TOKENS, fail_first=2, fail_first_status=503) as server:
        credential = _credential(workspace_a, erin_editor, server)
        policy = {"retries": 2, "backoff_seconds": 0}
        run, log = _execute(workspace_a, erin_editor, _graph(credential, policy))
        requests = _chat_requests(server)
    # Three requests: the SDK's own retry is off for a node that retries by policy.
    assert requests == 3
    model = _of(log, "model")
    assert [e["event"] for e in model] == [
        "node_started",
        "node_retry",
        "node_retry",
        *["on_token"] * sum(e["event"] == "on_token" for e in model),
        "node_finished",
    ]
    retries = [e for e in model if e["event"] == "node_retry"]
    assert [(e["attempt"], e["of"], e["code"]) for e in retries] == [
        (2, 3, "server_error"),
        (3, 3, "server_error"),
    ]
    assert all("HTTP 503" in e["error"] and e["delay"] == 0 for e in retries)
    assert "sk-test-secret" not in str(log)
    finished = model[-1]
    assert finished["data"] == "".join(REPLY_TOKENS) and finished["attempts"] == 3
    assert "took" not in finished
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"output": "".join(REPLY_TOKENS)}
    # Comparing runs shows what the policy did (the admin and the compare page read this).
    model_row = next(c for c in compare_runs(workspace_a, run, run) if c.node_id == "model")
    assert [note.split(" after: ")[0] for note in model_row.a.notes] == [
        "attempt 2 of 3",
        "attempt 3 of 3",
    ]


def test_a_429_is_retried_by_default_too(workspace_a, erin_editor):
    with FakeOpenAIServer(tokens=REPLY_TOKENS, fail_first=1, fail_first_status=429) as server:
        credential = _credential(workspace_a, erin_editor, server)
        run, log = _execute(
            workspace_a, erin_editor, _graph(credential, {"retries": 1, "backoff_seconds": 0})
        )
    assert [e["code"] for e in log if e["event"] == "node_retry"] == ["rate_limited"]
    assert run.status == RunStatus.SUCCEEDED


def test_a_node_without_a_policy_fails_the_run_as_before(workspace_a, erin_editor):
    with FakeOpenAIServer(tokens=REPLY_TOKENS, fail_first=5) as server:
        credential = _credential(workspace_a, erin_editor, server)
        run, log = _execute(workspace_a, erin_editor, _graph(credential, None))
        requests = _chat_requests(server)
    assert requests == 2  # one attempt, with the provider SDK's single retry inside it
    assert not [e for e in log if e["event"] == "node_retry"]
    error = next(e for e in log if e["event"] == "error")
    assert error["node_id"] == "model" and error["code"] == "server_error"
    assert "attempts" not in error
    assert run.status == RunStatus.FAILED


def test_a_refused_request_is_not_retried(workspace_a, erin_editor):
    """A 400 says the request itself is wrong: another attempt would be refused too."""
    with FakeOpenAIServer(tokens=REPLY_TOKENS, fail_first=3, fail_first_status=400) as server:
        credential = _credential(workspace_a, erin_editor, server)
        run, log = _execute(
            workspace_a, erin_editor, _graph(credential, {"retries": 3, "backoff_seconds": 0})
        )
        requests = _chat_requests(server)
    assert requests == 1
    assert not [e for e in log if e["event"] == "node_retry"]
    error = next(e for e in log if e["event"] == "error")
    assert error["code"] == "provider_refused" and "HTTP 400" in error["message"]
    assert run.status == RunStatus.FAILED


def test_a_node_error_of_its_own_input_is_never_retried(workspace_a, erin_editor):
    """The JSON parser's input is not JSON: a validation error, whatever `retry_on` says."""
    graph = flowgraphs.demo_graph(reply="not json at all", delay_ms=0)
    graph["nodes"].insert(
        2,
        {
            "id": "parse",
            "component": "parser.json",
            "params": {},
            "position": {"x": 400, "y": 0},
            "policy": {"retries": 5, "backoff_seconds": 0, "retry_on": ["server_error"]},
        },
    )
    graph["edges"][1] = {
        "source": "model",
        "source_port": "text",
        "target": "parse",
        "target_port": "text",
    }
    graph["edges"].append(
        {"source": "parse", "source_port": "json", "target": "output", "target_port": "text"}
    )
    run, log = _execute(workspace_a, erin_editor, graph)
    parse = _of(log, "parse")
    assert [e["event"] for e in parse] == ["node_started", "error"]
    assert parse[1]["code"] == "node_error"
    assert run.status == RunStatus.FAILED


def _error_port_graph(credential: Credential) -> dict[str, Any]:
    """input -> model; model.text -> answer; model.error -> apology (prompt) -> fallback."""
    graph = _graph(credential, {"retries": 1, "backoff_seconds": 0, "on_failure": "error_port"})
    graph["nodes"][2]["id"] = "answer"
    graph["edges"][1]["target"] = "answer"
    graph["nodes"] += [
        {
            "id": "apology",
            "component": "prompt.template",
            "params": {"template": "Sorry, the model is away: {failure}"},
            "position": {"x": 500, "y": 200},
        },
        {
            "id": "fallback",
            "component": "io.text_output",
            "params": {},
            "position": {"x": 750, "y": 200},
        },
    ]
    graph["edges"] += [
        {"source": "model", "source_port": "error", "target": "apology", "target_port": "failure"},
        {"source": "apology", "source_port": "prompt", "target": "fallback", "target_port": "text"},
    ]
    return graph


def test_the_error_port_takes_the_fallback_path_and_the_run_succeeds(workspace_a, erin_editor):
    with FakeOpenAIServer(fail_status=500) as server:
        credential = _credential(workspace_a, erin_editor, server)
        run, log = _execute(workspace_a, erin_editor, _error_port_graph(credential))
    assert not [e for e in log if e["event"] == "error"]
    model = _of(log, "model")
    assert [e["event"] for e in model] == ["node_started", "node_retry", "node_finished"]
    finished = model[-1]
    assert finished["took"] == "error_port" and finished["attempts"] == 2
    assert finished["failure"]["code"] == "server_error"
    assert finished["data"] == {"error": finished["failure"]}
    answer = _of(log, "answer")
    assert [e["event"] for e in answer] == ["node_finished"] and answer[0]["skipped"] is True
    fallback = _of(log, "fallback")[-1]
    assert fallback["event"] == "node_finished"
    assert fallback["data"].startswith("Sorry, the model is away: ")
    assert "server_error" in fallback["data"] and "HTTP 500" in fallback["data"]
    assert run.status == RunStatus.SUCCEEDED
    assert set(run.outputs) == {"fallback"}


def test_a_fixed_fallback_value_is_the_nodes_output_and_a_rerun_reuses_it(workspace_a, erin_editor):
    fallback = "The assistant is busy; please try again in a minute."
    with FakeOpenAIServer(fail_status=503) as server:
        credential = _credential(workspace_a, erin_editor, server)
        graph = _graph(credential, {"on_failure": "fallback", "fallback": fallback})
        run, log = _execute(workspace_a, erin_editor, graph)
        model = _of(log, "model")[-1]
        assert model["event"] == "node_finished" and model["took"] == "fallback"
        assert model["data"] == fallback and model["failure"]["code"] == "server_error"
        assert run.status == RunStatus.SUCCEEDED and run.outputs == {"output": fallback}

        # Re-run from the output node: the model's recorded output is the fallback.
        calls = _chat_requests(server)
        rerun = _rerun_from(run, "output")
        assert _chat_requests(server) == calls  # no model called for the recorded node
    rerun.refresh_from_db()
    reused = _of(stored_log(str(rerun.pk)), "model")
    assert [e["event"] for e in reused] == ["node_finished"]
    assert reused[0]["data"] == fallback and reused[0]["recorded_from"] == str(run.pk)
    assert rerun.status == RunStatus.SUCCEEDED and rerun.outputs == {"output": fallback}
    model_row = next(c for c in compare_runs(workspace_a, run, rerun) if c.node_id == "model")
    assert model_row.a.notes == [
        "took its fallback after: The model endpoint answered HTTP 503 (OpenAIAPIError)."
    ]
    assert model_row.same_output


def test_a_rerun_from_below_an_error_port_reuses_the_error(workspace_a, erin_editor):
    with FakeOpenAIServer(fail_status=500) as server:
        credential = _credential(workspace_a, erin_editor, server)
        run, _log = _execute(workspace_a, erin_editor, _error_port_graph(credential))
        calls = _chat_requests(server)
        rerun = _rerun_from(run, "apology")
        assert _chat_requests(server) == calls
    rerun.refresh_from_db()
    log = stored_log(str(rerun.pk))
    assert _of(log, "model")[0]["took"] == "error_port"
    assert _of(log, "answer")[-1]["skipped"] is True
    assert rerun.status == RunStatus.SUCCEEDED and rerun.outputs == run.outputs


def test_a_node_timeout_fails_the_node_with_a_clear_error(workspace_a, erin_editor):
    with FakeOpenAIServer(tokens=REPLY_TOKENS, stall_after=1) as server:
        credential = _credential(workspace_a, erin_editor, server)
        run, log = _execute(workspace_a, erin_editor, _graph(credential, {"timeout_seconds": 0.5}))
    model = _of(log, "model")
    assert [e["event"] for e in model] == ["node_started", "on_token", "error"]
    assert model[1]["data"] == REPLY_TOKENS[0]
    assert model[-1]["code"] == "timeout"
    assert model[-1]["message"] == "The node did not finish within its timeout of 0.5 s."
    assert run.status == RunStatus.FAILED


def test_a_timed_out_attempt_is_retried_and_its_tokens_stay_in_the_log(workspace_a, erin_editor):
    with FakeOpenAIServer(tokens=REPLY_TOKENS, stall_after=2) as server:
        credential = _credential(workspace_a, erin_editor, server)
        policy = {"retries": 1, "backoff_seconds": 0, "timeout_seconds": 0.5}
        run, log = _execute(workspace_a, erin_editor, _graph(credential, policy))
    events = [e["event"] for e in _of(log, "model")]
    retry = events.index("node_retry")
    # Each attempt's tokens are in the log on its side of the retry marker.
    assert "on_token" in events[:retry] and "on_token" in events[retry:]
    before = "".join(e["data"] for e in _of(log, "model")[:retry] if e["event"] == "on_token")
    assert before == "".join(REPLY_TOKENS[:2])
    assert events[-1] == "error" and _of(log, "model")[-1]["attempts"] == 2
    assert run.status == RunStatus.FAILED


def _wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def test_a_cancel_during_a_backoff_wait_ends_the_run_without_another_attempt(
    workspace_a, erin_editor
):
    with FakeOpenAIServer(tokens=REPLY_TOKENS, fail_first=10) as server:
        credential = _credential(workspace_a, erin_editor, server)
        # The first backoff is 30-60 s (base 60, halved at most by the jitter).
        graph = _graph(credential, {"retries": 3, "backoff_seconds": 60})
        run = flowgraphs.queued_run(workspace_a, erin_editor, graph, {"input": "hi"})
        claimed = services.run_claim(run_id=str(run.pk), task_id="t", worker="w")
        worker = threading.Thread(target=execute_claimed_run, args=(claimed,))
        worker.start()
        _wait_until(
            lambda: any(e["event"] == "node_retry" for e in stored_log(str(run.pk))),
            "the first node_retry",
        )
        acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
        services.run_cancel(workspace=workspace_a, acting=acting, run=run)
        # Well inside the 30 s the backoff would wait: a safety net, not a measurement.
        worker.join(25)
        assert not worker.is_alive(), "the cancel did not end the backoff wait"
        requests = _chat_requests(server)
    log = stored_log(str(run.pk))
    retry = next(e for e in log if e["event"] == "node_retry")
    assert retry["delay"] >= 30
    assert [e["event"] for e in log[log.index(retry) :]] == ["node_retry", "completed"]
    assert log[-1]["status"] == "cancelled"
    assert requests == 1  # the second attempt never started
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_backoff_doubles_per_retry_is_capped_and_jittered():
    policy = NodePolicy(backoff_seconds=2)
    rng = random.Random(7)
    for retry, ceiling in ((1, 2), (2, 4), (3, 8), (4, 16), (5, 32)):
        delays = [backoff_delay(policy, retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not one fixed value
    capped = NodePolicy(backoff_seconds=MAX_BACKOFF_SECONDS)
    assert backoff_delay(capped, 5, rng) <= MAX_BACKOFF_SECONDS
    assert backoff_delay(NodePolicy(backoff_seconds=0), 3, rng) == 0
