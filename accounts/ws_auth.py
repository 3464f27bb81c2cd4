"""WebSocket authentication: `Authorization: Bearer <token>` or the Django session cookie."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser

from accounts.services import api_token_authenticate


@database_sync_to_async
def _token(secret: str) -> Any:
    return api_token_authenticate(secret)


class BearerTokenMiddleware(BaseMiddleware):
    """Puts the token's user and workspace in the scope when a bearer token is presented.

    A presented but invalid token (or one scoped to named flows) leaves the connection
    anonymous: it never falls back to the cookie, so a revoked token cannot ride on a
    browser session.
    """

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization", b"").decode("latin-1")
        if raw:
            scheme, _, secret = raw.partition(" ")
            token = await _token(secret.strip()) if scheme.lower() == "bearer" else None
            if token is not None and token.flow_scope is not None:
                # The exec socket runs any graph (the editor's unsaved ones too): a key
                # scoped to named flows has no place there, so it is refused like a bad one.
                token = None
            scope = dict(scope)
            scope["auth_token"] = token
            if token is not None:
                scope["user"] = token.user
            else:
                scope["user"] = AnonymousUser()
        return await super().__call__(scope, receive, send)


def BearerOrSessionAuthMiddlewareStack(inner: Any) -> Any:  # noqa: N802 (Channels' naming)
    # Session/auth middleware runs first and sets scope["user"] from the cookie; the bearer
    # middleware, inside it, replaces that user whenever an Authorization header is present.
    return AuthMiddlewareStack(BearerTokenMiddleware(inner))
