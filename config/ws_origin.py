"""The WebSocket handshake's Origin must be this site's own origin: scheme, host and port.

Channels' AllowedHostsOriginValidator compares the host name only, so a page served from
`http://127.0.0.1:9999` (another program on the same machine) or `https://127.0.0.1`
could open sockets to a Flowdeck on `http://127.0.0.1:8000` with the user's cookie. Here
the Origin must equal the origin the browser reached this server at (the `Host` header,
which must be in ALLOWED_HOSTS, with the scheme the connection came over, `https` behind
a TLS proxy that says so) or one listed in CSRF_TRUSTED_ORIGINS, as for Django's CSRF
origin check. A handshake without an Origin is refused too.
"""

from __future__ import annotations

from typing import Any

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return ""


def _secure(scope: dict[str, Any]) -> bool:
    if scope.get("scheme") == "wss":
        return True
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        header, expected = proxy
        name = header.removeprefix("HTTP_").replace("_", "-").lower().encode()
        return _header(scope, name).split(",")[0].strip() == expected
    return False


def own_origins(scope: dict[str, Any]) -> set[str]:
    """The origins a page of this site can have for this handshake."""
    origins = {o.rstrip("/").lower() for o in settings.CSRF_TRUSTED_ORIGINS}
    host = _header(scope, b"host").strip().lower()
    domain, _port = split_domain_port(host)
    if host and domain and validate_host(domain, settings.ALLOWED_HOSTS):
        origins.add(f"{'https' if _secure(scope) else 'http'}://{host}")
    return origins


class SameOriginValidator:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            origin = _header(scope, b"origin").strip().rstrip("/").lower()
            if not origin or origin not in own_origins(scope):
                return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
