"""Failures of a backing service, not of the request: PostgreSQL, Redis or the broker is
unreachable (or the database gave up on a transaction, e.g. a deadlock). They are answered
as `unavailable`, an HTTP 503 or a WebSocket `rejected`, never as a 500 or a dropped
socket; the request's transaction has rolled back, so nothing was half-done.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

SERVICE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ConnectionError,  # the built-in one: refused, reset, broken pipe
    TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    BrokerError,
    OperationalError,
    InterfaceError,
)
UNAVAILABLE_MESSAGE = (
    "A service Flowdeck depends on is unavailable right now, so nothing was done. "
    "Try again in a few seconds."
)
RETRY_AFTER_SECONDS = 5

log = logging.getLogger(__name__)


class ServiceUnavailableMiddleware:
    """An unreachable service during a view: 503 with `Retry-After`, JSON under /api/."""

    def __init__(self, get_response):  # noqa: ANN001 (Django's middleware protocol)
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, SERVICE_UNAVAILABLE):
            return None
        log.warning("service unavailable during %s %s", request.method, request.path, exc_info=exc)
        body = {"code": "unavailable", "message": UNAVAILABLE_MESSAGE}
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse(body, status=503)
        else:
            response = HttpResponse(UNAVAILABLE_MESSAGE, status=503, content_type="text/plain")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: JSON under /api/ (a URL no route matches is an API answer too), else
    Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not Found"}, status=404)
    return page_not_found(request, exception)
