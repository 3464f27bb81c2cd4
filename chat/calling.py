"""What the one-call run API and the OpenAI-compatible endpoint share: authenticating a
streaming view the way the JSON API does, reading its JSON body, and starting the run.

These endpoints are plain async views (not django-ninja operations): they wait on a run
without holding a server thread, stream Server-Sent Events, and the OpenAI-compatible one
answers every error in OpenAI's shape. Each declares its minimum role with
`@minimum_role` like every API route; `authorise` enforces it (and the tenancy matrix
reads it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from ninja.errors import HttpError

from accounts.api_auth import (
    WorkspaceAuth,
    WorkspaceContext,
    check_key_scope,
    context,
    declared_role,
)
from accounts.tenancy import require_role
from config.jsontext import UnstorableText, check_text


class CallError(Exception):
    """A refused call: the HTTP status, a stable code, a sentence, and the body field at
    fault (`param`) when there is one."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param


def authorise(request: HttpRequest, view: Callable[..., Any]) -> WorkspaceContext:
    """The caller's workspace context, with the role `view` declares (sync: call it through
    sync_to_async). A bad or missing credential is 401, a non-member 404, a member below
    the role 403 (recorded), a flow-scoped key on a route not for it 403 (recorded), a key
over its rate limit 429, as on every API route."""
    try:
        membership = WorkspaceAuth()(request)
    except HttpError as exc:  # a key over its rate limit; the session cookie without CSRF
        code = "rate_limited" if exc.status_code == 429 else "csrf_failed"
        raise CallError(exc.status_code, code, str(exc)) from exc
    except Http404 as exc:
        raise CallError(404, "not_found", "Not found.") from exc
    if membership is None:
        raise CallError(401, "unauthorized", "A valid API token (Authorization: Bearer) is needed.")
    minimum = declared_role(view)
    if minimum is None:  # a programming error: fail closed
        raise CallError(403, "forbidden", "This route declares no role.")
    try:
        require_role(membership, minimum)
        check_key_scope(request, view)
    except PermissionDenied as exc:
        raise CallError(403, "forbidden", str(exc)) from exc
    return context(request)


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object, every string storable (config.jsontext), or CallError."""
    try:
        data = json.loads(request.body or b"null")
        check_text(data)
    except UnstorableText as exc:
        raise CallError(400, "invalid_body", str(exc)) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CallError(400, "invalid_body", "The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise CallError(400, "invalid_body", "The body must be a JSON object.")
    return data
