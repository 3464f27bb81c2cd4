"""Sign-ins and failed sign-ins, from Django's auth signals (platform-level: no workspace)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.http import HttpRequest

from accounts.models import User
from audit import context
from audit.services import record


def _request_context(request: HttpRequest | None) -> dict[str, Any]:
    if request is None:
        return {}
    ctx = context.from_request(request)
    return {"ip": ctx.ip, "user_agent": ctx.user_agent}


def on_login(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    with transaction.atomic():
        record(
            action="auth.login", actor=user, target=f"user:{user.pk}", **_request_context(request)
        )


def on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Django has already masked the password in `credentials`; only the username is kept.
    username = str(credentials.get("username") or credentials.get("email") or "")[:254]
    known = User.objects.filter(email__iexact=username).values_list("pk", flat=True).first()
    with transaction.atomic():
        record(
            action="auth.login_failed",
            target=f"user:{known}" if known else f"email:{username}",
            after={"username": username, "known_user": known is not None},
            **_request_context(request),
        )


def on_logout(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    if user is None or not getattr(user, "is_authenticated", False):
        return  # signing out without a session
    with transaction.atomic():
        record(
            action="auth.logout", actor=user, target=f"user:{user.pk}", **_request_context(request)
        )


def connect() -> None:
    user_logged_in.connect(on_login, dispatch_uid="audit.on_login")
    user_logged_out.connect(on_logout, dispatch_uid="audit.on_logout")
    user_login_failed.connect(on_login_failed, dispatch_uid="audit.on_login_failed")
