"""The JSON API (django-ninja): one NinjaAPI, one router per app, OpenAPI at /api/docs."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI

from accounts.api import router as accounts_router
from accounts.api_auth import WorkspaceAuth
from flows.api import router as flows_router
from runs.api import router as runs_router
from runs.services import RunRefused

api = NinjaAPI(
    title="Flowdeck API",
    version="1",
    urls_namespace="api",
    auth=WorkspaceAuth(),
    docs_url="/docs",
    openapi_url="/openapi.json",
)


@api.exception_handler(PermissionDenied)
def permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Forbidden."}, status=403)


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    detail = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    return api.create_response(request, {"detail": detail}, status=400)


@api.exception_handler(RunRefused)
def run_refused(request: HttpRequest, exc: RunRefused) -> HttpResponse:
    status = 429 if exc.code in {"rate_limited", "too_many_runs"} else 400
    return api.create_response(request, exc.as_dict(), status=status)


api.add_router("/w/{slug}/", accounts_router)
api.add_router("/w/{slug}/", flows_router)
api.add_router("/w/{slug}/", runs_router)
