"""API authentication: a workspace bearer token or the session cookie (+CSRF).

The workspace comes from the URL (`/api/w/<slug>/...`); a token only opens the workspace
it was issued for. Resolves the membership once; handlers read it with `context(request)`.

A key scoped to named flows (ApiToken.flow_scope) reaches a route only when the route is
about one flow, run or conversation (its path names it, and the access_* helpers refuse
those outside the scope with 404) or declares `@for_flow_keys` (a list that it filters to
the key's flows). Every other route refuses it (403, recorded): a new workspace-wide route
is closed to such keys until it says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils import timezone
from ninja import Path
from ninja.errors import HttpError
from ninja.security import HttpBearer
from ninja.utils import check_csrf
from pydantic import Field

from accounts.models import ApiToken, Membership, User, Workspace
from accounts.services import api_token_authenticate
from accounts.tenancy import resolve_membership, token_used_elsewhere
from audit.services import access_denied
from config.counters import count_up

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Path parameters naming one object of a flow: the access_* helpers check the key's scope.
FLOW_SCOPED_PARAMS = frozenset({"flow_id", "run_id", "conversation_id", "embed_id"})


def token_for_bearer(header: str, slug: str | None) -> ApiToken | None:
    """The token behind an `Authorization: Bearer` header if it is valid for workspace
    `slug`, else None."""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = api_token_authenticate(secret.strip())
    if token is None or slug is None:
        return None
    if token.workspace.slug != slug:
        token_used_elsewhere(token.user, token.pk, slug)
        return None
    return token


class WorkspaceAuth(HttpBearer):
    def __call__(self, request: HttpRequest) -> Membership | None:
        """The caller's membership, or None (401); `context(request)` then has the rest."""
        match = request.resolver_match
        slug = match.kwargs.get("slug") if match else None
        header = request.headers.get("Authorization", "")
        token = None
        if header:
            token = token_for_bearer(header, slug)
            if token is None:
                return None  # 401: a bad token never falls back to the cookie
            user = token.user
        else:
            session_user = getattr(request, "user", None)
            if not isinstance(session_user, User) or not session_user.is_authenticated:
                return None
            if request.method not in SAFE_METHODS and check_csrf(request):
                raise HttpError(403, "CSRF check failed.")
            user = session_user
        if slug is None:
            return None
        membership = resolve_membership(user, slug)
        if token is not None:
            membership.flow_scope = token.flow_scope
            check_key_rate(token)
        request.workspace_context = WorkspaceContext(membership, token)  # type: ignore[attr-defined]  # HttpRequest declares no such slot; context() reads it back, typed
        request.user = user
        return membership

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        raise NotImplementedError  # __call__ does it all


def check_key_rate(token: ApiToken) -> None:
    """429 once a key with a rate limit has made that many requests this minute (counted
    where the run-start counters are, shared by every web process)."""
    if token.rate_limit_per_minute is None:
        return
    minute = int(timezone.now().timestamp() // 60)
    (count,) = count_up([f"keyrate:{token.pk}:{minute}"])
    if count > token.rate_limit_per_minute:
        raise HttpError(
            429,
            f"This API key allows {token.rate_limit_per_minute} requests a minute; "
            "wait for the next minute.",
        )


@dataclass(frozen=True)
class WorkspaceContext:
    """What WorkspaceAuth resolved for an API request: the caller's membership (with its
    workspace and user) and the token, if one was presented."""

    membership: Membership
    token: ApiToken | None = None

    @property
    def workspace(self) -> Workspace:
        return self.membership.workspace

    @property
    def user(self) -> User:
        return self.membership.user


def context(request: HttpRequest) -> WorkspaceContext:
    """The typed workspace context of an authenticated API request."""
    ctx = getattr(request, "workspace_context", None)
    if not isinstance(ctx, WorkspaceContext):
        raise RuntimeError("context() is for requests WorkspaceAuth has authenticated")
    return ctx


ViewFunc = TypeVar("ViewFunc", bound=Callable[..., Any])


def minimum_role(role: str) -> Callable[[ViewFunc], ViewFunc]:
    """Declare an API route's minimum role where the route is declared:

        @router.post("flows", response=...)
        @minimum_role(Role.EDITOR)
        def flows_create(request, slug, payload): ...

    config.api enforces it before the handler runs (403 below it, recorded) and refuses to
    start if any route has no declaration; the tenancy matrix test reads it from here."""

    def declare(view: ViewFunc) -> ViewFunc:
        view.minimum_role = role  # type: ignore[attr-defined]  # a marker on the function object, read back by declared_role
        return view

    return declare


def declared_role(view: Callable[..., Any]) -> str | None:
    return getattr(view, "minimum_role", None)


def for_flow_keys(view: ViewFunc) -> ViewFunc:
    """Declare that a route without a flow, run or conversation in its path serves keys
    scoped to named flows, because it limits what it answers to their flows itself (a
    list filtered with `membership.flow_scope`)."""
    view.for_flow_keys = True  # type: ignore[attr-defined]  # a marker, read by check_key_scope
    return view


def check_key_scope(request: HttpRequest, view: Callable[..., Any]) -> None:
    """Refuse (403, recorded) a flow-scoped key on a route that does not serve it."""
    ctx = context(request)
    if ctx.token is None or ctx.token.flow_scope is None:
        return
    match = request.resolver_match
    if getattr(view, "for_flow_keys", False) or FLOW_SCOPED_PARAMS & set(
        match.kwargs if match else ()
    ):
        return
    access_denied(
        actor=ctx.user,
        workspace=ctx.workspace,
        target=f"token:{ctx.token.pk}",
        after={"reason": "key_scope", "path": request.path[:200]},
    )
    raise PermissionDenied("This API key is scoped to named flows; it cannot use this route.")


# Every route under /api/w/{slug}/ declares `slug: WorkspaceSlug` (the slug sits in the router
# prefix, which django-ninja otherwise reads as a query parameter). WorkspaceAuth has
# already resolved and checked the membership: use `context(request)`.
WorkspaceSlug = Path[str]

# Ids, version numbers and seqs as the database stores them (64-bit signed): a larger
# number is a 422 from the schema, not an OverflowError (a 500) from SQLite's driver.
MAX_DB_INT = 2**63 - 1
DbInt = Annotated[int, Field(ge=0, le=MAX_DB_INT)]
