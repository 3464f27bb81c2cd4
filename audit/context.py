"""Who is asking, from where: the request (or WebSocket) context audit entries default to.

`AuditContextMiddleware` sets it for every HTTP request; a consumer calls `from_scope()`
in `connect` (and the handlers that record run inside `database_sync_to_async`, which
copies the context along). Outside both (Celery, shell) there is no context: entries then
carry no IP or user agent, and `access.denied` is not recorded (no one is probing).
"""

from __future__ import annotations

import contextvars
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import HttpRequest

USER_AGENT_MAX = 512


@dataclass
class AuditContext:
    ip: str | None = None
    user_agent: str = ""
    # Resolved lazily: request.user may change during the request (API token auth).
    get_user: Callable[[], Any] = lambda: None
    # access.denied entries that could not be written yet (raised inside a transaction
    # that will roll back); the middleware writes them once the response is ready.
    pending_denials: list[dict[str, Any]] = field(default_factory=list)
    deferred: bool = False

    @property
    def user(self) -> Any:
        return self.get_user()


_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "flowdeck_audit_context", default=None
)


def current() -> AuditContext | None:
    return _current.get()


@contextmanager
def bound(context: AuditContext) -> Iterator[AuditContext]:
    """Make `context` current for the duration of the block."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def clean_ip(value: Any) -> str | None:
    """A normalised IP address (as the database will return it), or None."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        return None


def client_ip(meta: dict[str, Any]) -> str | None:
    """REMOTE_ADDR, or the client as seen by the N trusted proxies in front of us."""
    proxies = getattr(settings, "AXES_IPWARE_PROXY_COUNT", None) or 0
    if proxies:
        forwarded = [p.strip() for p in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
        forwarded = [p for p in forwarded if p]
        if len(forwarded) >= proxies:
            return clean_ip(forwarded[-proxies])
    return clean_ip(meta.get("REMOTE_ADDR"))


def from_request(request: HttpRequest) -> AuditContext:
    return AuditContext(
        ip=client_ip(request.META),
        user_agent=str(request.META.get("HTTP_USER_AGENT", ""))[:USER_AGENT_MAX],
        get_user=lambda: getattr(request, "user", None),
    )


def from_scope(scope: dict[str, Any]) -> AuditContext:
    """Build the context of a WebSocket (or any ASGI) connection and make it current.

    Call it at the start of `connect`; the returned context can also be re-bound with
    `bound()` in handlers that run in another task.
    """
    headers = {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
    }
    client = scope.get("client") or (None, None)
    meta = {"REMOTE_ADDR": client[0], "HTTP_X_FORWARDED_FOR": headers.get("x-forwarded-for", "")}
    context = AuditContext(
        ip=client_ip(meta),
        user_agent=headers.get("user-agent", "")[:USER_AGENT_MAX],
        get_user=lambda: scope.get("user"),
    )
    _current.set(context)
    return context
