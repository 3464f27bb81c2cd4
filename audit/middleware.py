"""Sets the audit context (IP, user agent, user) for each request; writes deferred denials."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from audit import context
from audit.services import write_pending_denials


class AuditContextMiddleware:
    """Place after AuthenticationMiddleware (the user is read lazily from the request)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        ctx = context.from_request(request)
        ctx.deferred = True
        with context.bound(ctx):
            response = self.get_response(request)
            if ctx.pending_denials:
                write_pending_denials(ctx)
        return response
