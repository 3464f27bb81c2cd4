"""`POST /api/w/<slug>/flows/<id>/run`: run a flow in one call (docs/api.md).

Without `stream` the call waits for the run's end and answers its outputs; with
`stream: true` it answers the run's events as Server-Sent Events, exactly as
`GET runs/<id>/stream` does (runs/sse.py), so a dropped client resumes there with
Last-Event-ID. Either way the run is an ordinary run: queued to the workers, logged,
audited, listed.

With `conversation_id` the run is the conversation's next turn (chat.services.flow_call):
it runs in the conversation's session, so the flow's conversation memory holds the turns
before it.

Timeout: a waiting call that outlives its `timeout` answers 504 naming the run, and the
run keeps going (it is already paid for, and the caller can collect it with
`GET runs/<id>` or follow it with its stream); cancelling is `POST runs/<id>/cancel`.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic import ValidationError as PydanticError

from accounts.api_auth import WorkspaceContext, minimum_role
from accounts.models import Role, Workspace
from accounts.tenancy import scoped
from chat import services
from chat.access import access_conversation
from chat.calling import CallError, authorise, json_body
from flows.access import access_flow
from runs.models import Run
from runs.services import RunRefused
from runs.sse import access_check, event_stream_response, wait_for_end

RATE_CODES = {"rate_limited", "too_many_runs", "budget_exceeded"}


class CallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(None, ge=1, le=2**31 - 1)
    stream: StrictBool = False
    timeout: float | None = Field(None, gt=0)
    conversation_id: str | None = Field(None, max_length=64)


def refused_status(exc: RunRefused) -> int:
    """The HTTP status of a refused run start."""
    if exc.code in RATE_CODES:
        return 429
    if isinstance(exc, services.NotPublished) or exc.code == "conversation_busy":
        return 409
    if exc.code == "not_found":
        return 404
    return 400


def _error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"code": code, "message": message, **extra}, status=status)


def _parse(body: dict[str, Any]) -> CallIn:
    try:
        call = CallIn.model_validate(body)
    except PydanticError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise CallError(400, "invalid_request", f"`{field}`: {first['msg']}.", field) from exc
    limit = settings.FLOWDECK["CALL_TIMEOUT_MAX_SECONDS"]
    if call.timeout is not None and call.timeout > limit:
        raise CallError(400, "invalid_request", f"`timeout` is at most {limit} seconds.", "timeout")
    return call


def _open(request: HttpRequest, flow_id: int) -> tuple[WorkspaceContext, CallIn, Run]:
    """Authorise, read the request and start its run, in one trip to the database thread."""
    ctx = authorise(request, run_flow)
    call = _parse(json_body(request))
    flow = access_flow(ctx.membership, flow_id)
    if call.conversation_id is not None:
        try:  # another workspace's: recorded as access.denied, like any scoped lookup
            access_conversation(ctx.membership, call.conversation_id)
        except Http404 as exc:
            raise CallError(404, "not_found", "No such conversation with this flow.") from exc
    run = services.flow_call(
        workspace=ctx.workspace,
        acting=ctx.membership,
        flow=flow,
        version_number=call.version,
        inputs=call.inputs,
        conversation_id=call.conversation_id,
        api_token=ctx.token,
    )
    return ctx, call, run


def _result(workspace: Workspace, run_id: Any) -> dict[str, Any]:
    run = scoped(Run, workspace).get(pk=run_id)
    body: dict[str, Any] = {"run_id": str(run.pk), "status": run.status, "outputs": run.outputs}
    if run.error:
        body["error"] = run.error
    return body


@csrf_exempt  # the session cookie's CSRF token is checked by WorkspaceAuth, as in the API
@require_http_methods(["POST"])
@minimum_role(Role.EDITOR)  # it starts a run
async def run_flow(request: HttpRequest, slug: str, flow_id: int) -> HttpResponseBase:
    try:
        ctx, call, run = await sync_to_async(_open)(request, flow_id)
    except CallError as exc:
        return _error(exc.status, exc.code, exc.message)
    except Http404:
        return _error(404, "not_found", "No such flow in this workspace.")
    except RunRefused as exc:
        return JsonResponse(exc.as_dict(), status=refused_status(exc))
    if call.stream:
        response: HttpResponseBase = event_stream_response(
            ctx.workspace, run, after=0, still_allowed=sync_to_async(access_check(request))
        )
    else:
        timeout = call.timeout or settings.FLOWDECK["CALL_TIMEOUT_SECONDS"]
        if not await wait_for_end(ctx.workspace, run, timeout=timeout):
            return _error(
                504,
                "timeout",
                f"The run did not finish within {timeout:g} seconds. It keeps running: "
                f"GET runs/{run.pk} for its outcome, or follow GET runs/{run.pk}/stream.",
                run_id=str(run.pk),
            )
        response = JsonResponse(await sync_to_async(_result)(ctx.workspace, run.pk))
    response["X-Flowdeck-Run-Id"] = str(run.pk)
    return response
