"""The JSON API (django-ninja): one NinjaAPI, one router per app, OpenAPI at /api/docs."""

from __future__ import annotations

import functools
import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured, PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema
from ninja.errors import HttpError
from ninja.parser import Parser

from accounts.api import router as accounts_router
from accounts.api_auth import WorkspaceAuth, check_key_scope, context, declared_role
from accounts.tenancy import require_role
from chat.api import router as chat_router
from chat.embed_api import router as embed_router
from config.jsontext import UnstorableText, check_text
from flows.api import router as flows_router
from knowledge.api import router as knowledge_router
from runs.api import router as runs_router
from runs.approvals import ApprovalRefused
from runs.services import RunRefused
from usage.api import router as usage_router


class StrictJsonParser(Parser):
    """JSON bodies whose every string can be stored (config.jsontext)."""

    def parse_body(self, request: HttpRequest) -> Any:
        data = json.loads(request.body)
        check_text(data)
        return data


api = NinjaAPI(
    title="Flowdeck API",
    version="1",
    urls_namespace="api",
    auth=WorkspaceAuth(),
    docs_url="/docs",
    openapi_url="/openapi.json",
    parser=StrictJsonParser(),
)


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # django-ninja turns any parser failure into "Cannot parse request body": say which
    # text could not be stored when that was the reason.
    cause = exc.__cause__
    detail = str(cause) if isinstance(cause, UnstorableText) else str(exc)
    return api.create_response(request, {"detail": detail}, status=exc.status_code)


@api.exception_handler(PermissionDenied)
def permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Forbidden."}, status=403)


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    detail = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    return api.create_response(request, {"detail": detail}, status=400)


@api.exception_handler(ApprovalRefused)
def approval_refused(request: HttpRequest, exc: ApprovalRefused) -> HttpResponse:
    status = {"not_found": 404, "already_decided": 409}.get(exc.code, 400)
    return api.create_response(request, exc.as_dict(), status=status)


@api.exception_handler(RunRefused)
def run_refused(request: HttpRequest, exc: RunRefused) -> HttpResponse:
    status = 429 if exc.code in {"rate_limited", "too_many_runs", "budget_exceeded"} else 400
    return api.create_response(request, exc.as_dict(), status=status)


class ErrorOut(Schema):
    """Every 4xx/5xx body: `detail` (a message; field -> messages for 400; the schema's
    errors for 422), or `code` + `message` (refused runs, 429; an unavailable service, 503)."""

    detail: str | dict[str, Any] | list[Any] | None = None
    code: str | None = None
    message: str | None = None


# What each operation may answer besides its success, documented in the OpenAPI schema
# (and held to it by tests/test_api_schema_fuzz.py): 401 no or a bad credential, 404 not in
# this workspace, 422 a request outside the schema, 503 a backing service unavailable;
# writes also 400 (a value the service refuses) and 403 (below the route's role); run
# starts also 429 (rate or concurrency limit).
READ_ERRORS = (401, 404, 422, 503)
WRITE_ERRORS = (*READ_ERRORS, 400, 403)
EXTRA_ERRORS = {"start_run": (400, 429), "rerun": (400, 429), "run_events": (400,)}


def _document_errors() -> None:
    for _prefix, router in api._routers:
        for path_view in router.path_operations.values():
            for operation in path_view.operations:
                writes = set(operation.methods) & {"POST", "PUT", "PATCH", "DELETE"}
                codes = [*(WRITE_ERRORS if writes else READ_ERRORS)]
                codes += EXTRA_ERRORS.get(operation.view_func.__name__, ())
                for code in codes:
                    if code not in operation.response_models:
                        operation.response_models[code] = operation._create_response_model(ErrorOut)


def enforce_roles(api: NinjaAPI) -> None:
    """Every operation declares its minimum role (accounts.api_auth.minimum_role); checked
    here, before its handler, for every operation alike. An undeclared one stops the start."""
    for _prefix, router in api._routers:
        for path, path_view in router.path_operations.items():
            for operation in path_view.operations:
                view = operation.view_func
                minimum = declared_role(view)
                if minimum is None:
                    raise ImproperlyConfigured(
                        f"API route {operation.methods} {path} ({view.__name__}) declares no "
                        "minimum role: add @minimum_role(...) under its route decorator."
                    )
                operation.view_func = _role_checked(view, minimum)


def _role_checked(view: Any, minimum: str) -> Any:
    @functools.wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        require_role(context(request).membership, minimum)
        check_key_scope(request, view)
        return view(request, *args, **kwargs)

    return checked


api.add_router("/w/{slug}/", accounts_router)
api.add_router("/w/{slug}/", flows_router)
api.add_router("/w/{slug}/", runs_router)
api.add_router("/w/{slug}/", chat_router)
api.add_router("/w/{slug}/", embed_router)
api.add_router("/w/{slug}/", knowledge_router)
api.add_router("/w/{slug}/", usage_router)
_document_errors()
enforce_roles(api)
