from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from accounts.selectors import memberships_of


def workspaces(request: HttpRequest) -> dict[str, Any]:
    """The signed-in user's workspaces, for the switcher in the page header."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"switcher_memberships": memberships_of(user)}
