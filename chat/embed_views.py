"""What a website visitor's browser calls (chat/embeds.py says what an embed is).

- `GET /embed/<token>/`: the chat page, framed by the website (or opened on its own). Only
  the embed's allowed origins may frame it (CSP frame-ancestors; no X-Frame-Options).
- `POST /embed/<token>/api/visitor`: a new visitor's token (the page keeps it).
- `GET  /embed/<token>/api/conversations[/<id>]`: the visitor's conversations, one's turns.
- `POST /embed/<token>/api/messages`: `{message, conversation_id?}` starts the next turn;
  answers `{conversation_id, run_id}`.
- `GET  /embed/<token>/api/runs/<run_id>/events`: the answer as Server-Sent Events (`id:`
  is the run's seq, so a dropped EventSource resumes with Last-Event-ID on its own).
- `POST /embed/<token>/api/runs/<run_id>/stop`.

The visitor's token travels in the `X-Flowdeck-Visitor` header (`visitor` in the query for
the event stream: EventSource sets no headers); no cookies, so a browser that blocks
third-party cookies still chats. A request from another website (an `Origin` that is
neither this deployment's nor allowed) is refused with 403 before anything else; allowed
websites may call the API directly (CORS), e.g. for a chat of their own design.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from accounts.tenancy import scoped
from audit.context import client_ip
from chat import embeds
from chat.embeds import EmbedRefused
from chat.models import Embed
from config.jsontext import UnstorableText, check_text
from runs.models import Run
from runs.sse import follow_run, sse_response

VISITOR_HEADER = "X-Flowdeck-Visitor"
ALLOWED_HEADERS = f"Content-Type, {VISITOR_HEADER}, Last-Event-ID"


def own_origin(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}".lower()


def _refused(exc: EmbedRefused) -> JsonResponse:
    return JsonResponse({"code": exc.code, "message": exc.message}, status=exc.status)


def _with_cors(
    request: HttpRequest, embed: Embed | None, response: HttpResponseBase
) -> HttpResponseBase:
    """Let an allowed website read the answer (an iframe of ours needs nothing: same origin)."""
    origin = request.headers.get("Origin")
    response["Vary"] = "Origin"
    if origin and embed is not None and origin != own_origin(request):
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response["Access-Control-Allow-Methods"] = "GET, POST"
        response["Access-Control-Max-Age"] = "600"
    return response


def _load(request: HttpRequest, public_id: str) -> Embed:
    """The embed, if the request may use it: known and enabled, from an allowed origin."""
    embed = embeds.embed_for_visitors(public_id)
    if not embeds.origin_allowed(embed, request.headers.get("Origin"), own_origin(request)):
        raise EmbedRefused(
            403, "origin_not_allowed", "This chat may not be used from this website."
        )
    return embed


def _visitor(request: HttpRequest, embed: Embed) -> str:
    token = request.headers.get(VISITOR_HEADER) or request.GET.get("visitor")
    return embeds.visitor_of(embed, token)


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
        check_text(data)
    except (ValueError, UnicodeDecodeError, UnstorableText) as exc:
        raise EmbedRefused(400, "invalid_body", "The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise EmbedRefused(400, "invalid_body", "The body must be a JSON object.")
    return data


def visitor_api(handler: Callable[..., Any]) -> Callable[..., HttpResponseBase]:
    """A visitor endpoint: preflight answered, the embed loaded and checked, refusals as
    `{code, message}` with their status, CORS headers for allowed websites."""

    @csrf_exempt  # no cookie is read: the visitor token is a header
    def view(request: HttpRequest, public_id: str, **kwargs: Any) -> HttpResponseBase:
        embed = None
        try:
            embed = _load(request, public_id)
            if request.method == "OPTIONS":
                response: HttpResponseBase = HttpResponse(status=204)
            else:
                result = handler(request, embed, **kwargs)
                response = result if isinstance(result, HttpResponseBase) else JsonResponse(result)
        except EmbedRefused as exc:
            response = _refused(exc)
            if exc.code == "origin_not_allowed":
                return response  # no CORS headers: the website cannot read even this
        return _with_cors(request, embed, response)

    return view


# --- the chat page ----------------------------------------------------------------------------
def chat_page(request: HttpRequest, public_id: str) -> HttpResponse:
    """The chat, for an iframe (the bubble's or the website's own)."""
    try:
        embed = embeds.embed_for_visitors(public_id)
    except EmbedRefused:
        return render(request, "chat/embed_missing.html", status=404)
    response = render(
        request,
        "chat/embed.html",
        {
            "embed": embed,
            "config": {
                "token": embed.public_id,
                "title": embed.title,
                "welcome": embed.welcome_message,
                "accent": embed.accent_color,
                "showSources": embed.show_sources,
            },
        },
    )
    response.xframe_options_exempt = True  # Django's marker: no X-Frame-Options
    response._csp_replace = {  # type: ignore[attr-defined]  # django-csp's per-response policy
        "frame-ancestors": ["'self'", *embed.allowed_origins]
    }
    return response


# --- the visitor's API ------------------------------------------------------------------------
@require_http_methods(["POST", "OPTIONS"])
@visitor_api
def visitor(request: HttpRequest, embed: Embed) -> dict[str, Any]:
    return {"visitor": embeds.visitor_token(embed, client_ip(request.META) or "unknown")}


@require_http_methods(["GET", "OPTIONS"])
@visitor_api
def conversations(request: HttpRequest, embed: Embed) -> dict[str, Any]:
    visitor_id = _visitor(request, embed)
    rows = embeds.visitor_conversations(embed, visitor_id).order_by("-updated_at")[:50]
    return {
        "conversations": [
            {"id": str(c.pk), "title": c.title, "updated_at": c.updated_at.isoformat()}
            for c in rows
        ]
    }


@require_http_methods(["GET", "OPTIONS"])
@visitor_api
def conversation(request: HttpRequest, embed: Embed, conversation_id: str) -> dict[str, Any]:
    found = embeds.visitor_conversation(embed, _visitor(request, embed), conversation_id)
    return {
        "id": str(found.pk),
        "title": found.title,
        "turns": embeds.visitor_history(embed, found),
    }


@require_http_methods(["POST", "OPTIONS"])
@visitor_api
def messages(request: HttpRequest, embed: Embed) -> HttpResponseBase:
    visitor_id = _visitor(request, embed)
    body = _body(request)
    message, conversation_id = body.get("message"), body.get("conversation_id")
    if not isinstance(message, str):
        raise EmbedRefused(400, "invalid_message", "`message` is the text to send.")
    if conversation_id is not None and not isinstance(conversation_id, str):
        raise EmbedRefused(400, "not_found", "No such conversation.")
    turn = embeds.visitor_turn(
        embed=embed, visitor=visitor_id, message=message, conversation_id=conversation_id
    )
    return JsonResponse(
        {"conversation_id": str(turn.conversation.pk), "run_id": str(turn.run.pk)}, status=201
    )


@require_http_methods(["POST", "OPTIONS"])
@visitor_api
def stop(request: HttpRequest, embed: Embed, run_id: str) -> dict[str, Any]:
    embeds.visitor_stop(embed=embed, visitor=_visitor(request, embed), run_id=run_id)
    return {"stopped": True}


# The event stream is async (it waits on the run without holding a thread), so it does its
# checks through sync_to_async rather than with `visitor_api`.
def _open_stream(request: HttpRequest, public_id: str, run_id: str) -> tuple[Embed, Any]:
    embed = _load(request, public_id)
    run = embeds.visitor_run(embed, _visitor(request, embed), run_id)
    return embed, run


@require_http_methods(["GET", "OPTIONS"])
async def events(request: HttpRequest, public_id: str, run_id: str) -> HttpResponseBase:
    embed: Embed | None = None
    try:
        embed, run = await sync_to_async(_open_stream)(request, public_id, run_id)
    except EmbedRefused as exc:
        response = _refused(exc)
        if exc.code == "origin_not_allowed":
            return response
        return _with_cors(request, embed, response)
    if request.method == "OPTIONS":
        return _with_cors(request, embed, HttpResponse(status=204))
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    after = max(0, int(raw)) if raw.isdigit() else 0
    _, feeders = await sync_to_async(embeds.answer_nodes)(run)

    async def still_enabled() -> bool:
        return await Embed.objects.filter(pk=embed.pk, enabled=True).aexists()

    async def stream() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        async for message in follow_run(embed.workspace, run, after, still_allowed=still_enabled):
            if message is None:
                yield ": keep-alive\n\n"
                continue
            shown = embeds.visitor_event(message, feeders, embed.show_sources)
            if shown is None:
                continue
            if shown["event"] == "done":
                ended = await sync_to_async(_ended)(embed, run.pk)
                shown.update(ended)
            yield f"id: {shown['seq']}\ndata: {json.dumps(shown, ensure_ascii=False)}\n\n"

    return _with_cors(request, embed, sse_response(stream()))


def _ended(embed: Embed, run_id: Any) -> dict[str, Any]:
    run = scoped(Run, embed.workspace).select_related("flow_version").get(pk=run_id)
    return embeds.visitor_ending(run)
