"""The OpenAI-compatible endpoint of a workspace (docs/api.md, "OpenAI-compatible API"):

- `GET /api/w/<slug>/v1/models`: the workspace's published flows, as models;
- `POST /api/w/<slug>/v1/chat/completions`: run the published flow named by `model`.

`messages` map onto the flow's chat input: the last message (a user message) is the input;
the earlier ones are the history, put in the run's conversation memory before it starts
(chat.services.flow_call). The answer is the flow's text output; streamed, it is the tokens
of the node feeding that output (chat.graphs), as OpenAI sends them: a role delta first,
content deltas, a last chunk with `finish_reason: "stop"`, the usage chunk when asked
(`stream_options.include_usage`), then `data: [DONE]`. Every error has OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`.

Each call is an ordinary run (logged, audited, listed): the completion's id is
`chatcmpl-<run id>` and the `X-Flowdeck-Run-Id` header names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from accounts.api_auth import WorkspaceContext, for_flow_keys, minimum_role
from accounts.models import Membership, Role, Workspace
from accounts.tenancy import in_flow_scope, scoped
from audit.services import access_denied
from chat import selectors, services
from chat.calling import CallError, authorise, json_body
from chat.graphs import AnswerSource, answer_sources, answer_text, chat_inputs
from chat.models import Publication
from flows.models import FlowVersion
from runs.models import Run, RunStatus
from runs.selectors import run_usage
from runs.services import RunRefused
from runs.sse import access_check, follow_run, sse_response, wait_for_end

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    429: "requests",
    502: "server_error",
    504: "timeout",
}
MESSAGE_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def error_body(message: str, *, type: str, param: str | None, code: str | None) -> dict:  # noqa: A002
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def openai_error(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> JsonResponse:
    response = JsonResponse(
        error_body(
            message, type=ERROR_TYPES.get(status, "invalid_request_error"), param=param, code=code
        ),
        status=status,
    )
    if status >= 500:
        # A run was started: OpenAI's SDKs would retry a 5xx and start it again.
        response["x-should-retry"] = "false"
    return response


def _call_error(exc: CallError) -> JsonResponse:
    code = {
        "unauthorized": "invalid_api_key",
        "forbidden": "insufficient_role",
        "rate_limited": "rate_limit_exceeded",
    }.get(exc.code, exc.code)
    return openai_error(exc.status, exc.message, code=code, param=exc.param)


# --- the request -----------------------------------------------------------------------
@dataclass(frozen=True)
class Completion:
    """A chat completion request as the flow takes it."""

    model: str
    version: int | None
    text: str
    history: list[services.HistoryMessage]
    stream: bool
    include_usage: bool


def _text_of(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise CallError(
                    400,
                    "invalid_value",
                    f"messages[{index}]: only text content parts are taken by a flow.",
                    f"messages[{index}].content",
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise CallError(
        400,
        "invalid_type",
        f"messages[{index}].content must be a string or a list of text parts.",
        f"messages[{index}].content",
    )


def parse_completion(body: dict[str, Any]) -> Completion:
    """The request's fields a flow takes, or CallError (400) naming the field at fault.
    Sampling parameters (temperature, max_tokens, ...) are accepted and ignored: the
    flow's model nodes hold their own."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise CallError(400, "missing_required_parameter", "You must provide a model.", "model")
    name, at, number = model.rpartition("@")
    version = None
    if at:
        if not number.isdigit() or not 1 <= int(number) < 2**31:
            raise CallError(404, "model_not_found", f"The model `{model}` does not exist.", "model")
        model_name, version = name, int(number)
    else:
        model_name = model
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise CallError(
            400, "invalid_type", "`messages` must be a non-empty array of messages.", "messages"
        )
    history: list[services.HistoryMessage] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise CallError(
                400, "invalid_type", f"messages[{index}] must be an object.", f"messages[{index}]"
            )
        role = message.get("role")
        if role not in MESSAGE_ROLES:
            raise CallError(
                400,
                "invalid_value",
                f"messages[{index}].role must be one of system, developer, user, assistant "
                "(a flow takes no tool messages).",
                f"messages[{index}].role",
            )
        history.append(
            services.HistoryMessage(MESSAGE_ROLES[role], _text_of(message.get("content"), index))
        )
    last = history.pop()
    if last.role != "user":
        raise CallError(
            400,
            "invalid_value",
            "The last message must be the user's: it is the flow's input.",
            f"messages[{len(messages) - 1}].role",
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise CallError(400, "invalid_type", "`stream` must be a boolean.", "stream")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise CallError(
                400,
                "invalid_value",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            raise CallError(
                400,
                "invalid_type",
                '`stream_options` must be an object like {"include_usage": true}.',
                "stream_options",
            )
    n = body.get("n")
    if n is not None and n != 1:
        raise CallError(400, "invalid_value", "A flow gives one answer: `n` must be 1.", "n")
    return Completion(
        model=model_name,
        version=version,
        text=last.content,
        history=history,
        stream=bool(stream),
        include_usage=bool((options or {}).get("include_usage")),
    )


# --- starting the run --------------------------------------------------------------------
@dataclass(frozen=True)
class Started:
    run: Run
    sources: list[AnswerSource]


def _start(ctx: WorkspaceContext, completion: Completion) -> Started:
    publication = selectors.publication_for_model(ctx.workspace, completion.model)
    if publication is not None and not in_flow_scope(ctx.membership, publication.flow_id):
        access_denied(
            actor=ctx.user,
            workspace=ctx.workspace,
            target=f"flow:{publication.flow_id}",
            after={"reason": "key_scope"},
        )
        publication = None  # a flow outside the key's scope is not there for it
    if publication is None:
        raise CallError(
            404,
            "model_not_found",
            f"The model `{completion.model}` does not exist: GET v1/models lists this "
            "workspace's published flows.",
            "model",
        )
    graph = _graph_of(publication, completion.version)
    inputs = chat_inputs(graph)
    if len(inputs) != 1:
        raise CallError(
            400,
            "unsupported_flow",
            f"This flow has {len(inputs)} chat inputs; the chat completions endpoint runs "
            "flows with exactly one (use the run API for the others).",
            "model",
        )
    try:
        run = services.flow_call(
            workspace=ctx.workspace,
            acting=ctx.membership,
            flow=publication.flow,
            version_number=completion.version or publication.version.number,
            inputs={inputs[0]: completion.text},
            history=completion.history,
            api_token=ctx.token,
        )
    except RunRefused as exc:
        if exc.code == "budget_exceeded":  # OpenAI's code for a spent quota
            raise CallError(429, "insufficient_quota", exc.message) from exc
        if exc.code in {"rate_limited", "too_many_runs"}:
            raise CallError(429, "rate_limit_exceeded", exc.message) from exc
        raise CallError(400, exc.code, exc.message, "messages") from exc
    return Started(run, answer_sources(graph))


def _graph_of(publication: Publication, version: int | None) -> Any:
    if version is None or version == publication.version.number:
        return publication.version.graph
    named = (
        scoped(FlowVersion, publication.workspace)
        .filter(flow=publication.flow_id, number=version)
        .first()
    )
    if named is None:
        raise CallError(
            404,
            "model_not_found",
            f"The model `{publication.model_name}` has no version {version}.",
            "model",
        )
    return named.graph


def _open(request: HttpRequest) -> tuple[WorkspaceContext, Completion, Started]:
    """Authorise, read the request and start its run: one trip to the database thread (each
    trip costs a hand-over, and this is on the way to the first token)."""
    ctx = authorise(request, chat_completions)
    completion = parse_completion(json_body(request))
    return ctx, completion, _start(ctx, completion)


def _finished(workspace: Workspace, run_id: Any) -> Run:
    return scoped(Run, workspace).get(pk=run_id)


# --- the answer --------------------------------------------------------------------------
def openai_usage(run: Run) -> dict[str, int]:
    """OpenAI's `usage` object for a finished run: the totals its log reports."""
    usage = run_usage(run)
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _completion_id(run: Run) -> str:
    return f"chatcmpl-{run.pk.hex}"


def _failure(run: Run) -> str:
    if run.status == RunStatus.CANCELLED:
        return f"The flow's run {run.pk} was cancelled."
    return f"The flow's run {run.pk} failed: {run.error or 'no reason was given'}"


class ChunkWriter:
    """`chat.completion.chunk` Server-Sent Events of one completion."""

    def __init__(self, run: Run, model: str, include_usage: bool) -> None:
        self.base = {
            "id": _completion_id(run),
            "object": "chat.completion.chunk",
            "created": int(run.created_at.timestamp()),
            "model": model,
            "system_fingerprint": None,
        }
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        body: dict[str, Any] = {**self.base, "choices": [choice]}
        if self.include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def usage(self, usage: dict[str, int]) -> str:
        body = {**self.base, "choices": [], "usage": usage}
        return f"data: {json.dumps(body)}\n\n"

    @staticmethod
    def error(status: int, message: str, code: str) -> str:
        body = error_body(message, type=ERROR_TYPES[status], param=None, code=code)
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _stream(
    request: HttpRequest, ctx: WorkspaceContext, started: Started, completion: Completion
) -> AsyncIterator[str]:
    run, sources = started.run, started.sources
    feeders = {s.feeder for s in sources if s.feeder}
    writer = ChunkWriter(run, completion.model, completion.include_usage)
    yield writer.chunk({"role": "assistant", "content": "", "refusal": None})
    streaming: str | None = None  # the first feeder to stream is the answer's
    streamed: list[str] = []
    timeout = settings.FLOWDECK["CALL_TIMEOUT_SECONDS"]
    events = follow_run(ctx.workspace, run, 0, still_allowed=sync_to_async(access_check(request)))
    try:
        async with contextlib.aclosing(events), asyncio.timeout(timeout):
            async for message in events:
                if message is None:
                    yield ": keep-alive\n\n"
                elif message["event"] == "on_token" and message["node_id"] in feeders:
                    streaming = streaming or message["node_id"]
                    text = message.get("data")
                    if message["node_id"] == streaming and isinstance(text, str) and text:
                        streamed.append(text)
                        yield writer.chunk({"content": text})
    except TimeoutError:
        yield writer.error(
            504,
            f"The flow did not answer within {timeout} seconds; its run {run.pk} keeps going.",
            "timeout",
        )
        return
    finished = await sync_to_async(_finished)(ctx.workspace, run.pk)
    if not finished.is_finished:
        return  # the caller's access ended mid-stream
    if finished.status != RunStatus.SUCCEEDED:
        yield writer.error(502, _failure(finished), "flow_failed")
        return
    answer = answer_text(sources, finished.outputs, prefer=streaming)
    so_far = "".join(streamed)
    if len(answer) > len(so_far) and answer.startswith(so_far):
        # Nothing (or not all of it) came as tokens: a node that does not stream fed it.
        yield writer.chunk({"content": answer[len(so_far) :]})
    yield writer.chunk({}, finish_reason="stop")
    if completion.include_usage:
        yield writer.usage(await sync_to_async(openai_usage)(finished))
    yield "data: [DONE]\n\n"


def _completion(
    run: Run, model: str, sources: list[AnswerSource], usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": _completion_id(run),
        "object": "chat.completion",
        "created": int(run.created_at.timestamp()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": answer_text(sources, run.outputs),
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


# --- the views ---------------------------------------------------------------------------
@csrf_exempt  # the session cookie's CSRF token is checked by WorkspaceAuth, as in the API
@require_http_methods(["POST"])
@minimum_role(Role.EDITOR)  # it starts a run
@for_flow_keys  # runs only the key's flows (another model is not found)
async def chat_completions(request: HttpRequest, slug: str) -> HttpResponseBase:
    try:
        ctx, completion, started = await sync_to_async(_open)(request)
    except CallError as exc:
        return _call_error(exc)
    run = started.run
    if completion.stream:
        response: HttpResponseBase = sse_response(_stream(request, ctx, started, completion))
    else:
        timeout = settings.FLOWDECK["CALL_TIMEOUT_SECONDS"]
        if not await wait_for_end(ctx.workspace, run, timeout=timeout):
            response = openai_error(
                504,
                f"The flow did not answer within {timeout} seconds; its run {run.pk} keeps going.",
                code="timeout",
            )
        else:
            finished = await sync_to_async(_finished)(ctx.workspace, run.pk)
            if finished.status != RunStatus.SUCCEEDED:
                response = openai_error(502, _failure(finished), code="flow_failed")
            else:
                usage = await sync_to_async(openai_usage)(finished)
                response = JsonResponse(
                    _completion(finished, completion.model, started.sources, usage)
                )
    response["X-Flowdeck-Run-Id"] = str(run.pk)
    return response


def _models(membership: Membership) -> dict[str, Any]:
    workspace = membership.workspace
    publications = selectors.published(workspace)
    if membership.flow_scope is not None:  # a key scoped to named flows lists only those
        publications = publications.filter(flow_id__in=membership.flow_scope)
    return {
        "object": "list",
        "data": [
            {
                "id": publication.model_name,
                "object": "model",
                "created": int(publication.published_at.timestamp()),
                "owned_by": workspace.slug,
            }
            for publication in publications[:1000]
        ],
    }


@require_http_methods(["GET"])
@minimum_role(Role.VIEWER)  # the names of published flows; running one needs an editor
@for_flow_keys  # lists only the key's flows
async def models(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        ctx = await sync_to_async(authorise)(request, models)
    except CallError as exc:
        return _call_error(exc)
    return JsonResponse(await sync_to_async(_models)(ctx.membership))
