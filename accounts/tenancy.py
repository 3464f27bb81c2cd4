"""Tenancy: the one place that resolves a workspace and checks membership and role.

Every tenant-owned query goes through `scoped(Model, workspace)`; every page, API
endpoint and consumer resolves `/w/<slug>/` through `resolve_membership`. "Missing" and
"not a member" raise the same 404 so workspace names and ids do not leak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.db import models
from django.http import Http404, HttpRequest, HttpResponseBase

from accounts.models import Membership, Role, User, Workspace
from audit.services import access_denied, access_denied_lookup

M = TypeVar("M", bound=models.Model)


def scoped(model: type[M], workspace: Workspace) -> models.QuerySet[M]:
    """All rows of a tenant-owned model that belong to `workspace` — the only way to read them."""
    if workspace is None or workspace.pk is None:
        raise ValueError("scoped() needs a saved workspace")
    return model._default_manager.filter(workspace=workspace)


def get_scoped(model: type[M], workspace: Workspace, **lookup: Any) -> M:
    """One tenant-owned row of `workspace`, or Http404 (also for rows of other workspaces)."""
    try:
        return scoped(model, workspace).get(**lookup)
    # ObjectDoesNotExist: the base of every model's DoesNotExist (typed for any model M).
    except (ObjectDoesNotExist, ValueError, TypeError, ValidationError) as exc:
        access_denied_lookup(
            model, workspace, lookup, invalid=not isinstance(exc, ObjectDoesNotExist)
        )
        raise Http404("Not found") from exc


def resolve_membership(user: User | Any, slug: str) -> Membership:
    """The active user's membership of workspace `slug`, or Http404 for anything else."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        raise Http404("Not found")
    membership = (
        Membership.objects.select_related("workspace", "user")
        .filter(user=user, workspace__slug=slug)
        .first()
    )
    if membership is None:
        access_denied(
            actor=user,
            workspace=Workspace.objects.filter(slug=slug).first(),
            target=f"workspace:{slug}",
        )
        raise Http404("Not found")
    return membership


def require_role(membership: Membership, minimum: str) -> None:
    """Members below `minimum` get a 403: they know the workspace exists, not the action."""
    if not membership.has_role(minimum):
        access_denied(
            actor=membership.user,
            workspace=membership.workspace,
            target=f"membership:{membership.pk}",
            after={"reason": "role", "needs": minimum, "has": membership.role},
        )
        raise PermissionDenied(f"This needs the {Role(minimum).label.lower()} role or higher.")


def in_flow_scope(membership: Membership, flow_id: object) -> bool:
    """Whether the request's API key reaches flow `flow_id` (always, without a flow-scoped
    key: session callers and workspace keys reach every flow)."""
    scope = membership.flow_scope
    if scope is None:
        return True
    try:
        return int(str(flow_id)) in scope
    except ValueError:
        return False


def require_flow_in_scope(membership: Membership, flow_id: object, target: str) -> None:
    """404 (recorded as `access.denied`) for an object of a flow the request's key is not
    scoped to: the same answer as for another workspace's object."""
    if not in_flow_scope(membership, flow_id):
        access_denied(
            actor=membership.user,
            workspace=membership.workspace,
            target=target,
            after={"reason": "key_scope"},
        )
        raise Http404("Not found")


def token_used_elsewhere(user: User, token_id: int, slug: str) -> None:
    """`access.denied` for a valid token presented on another workspace's URL."""
    access_denied(
        actor=user,
        workspace=Workspace.objects.filter(slug=slug).first(),
        target=f"workspace:{slug}",
        after={"reason": "token_other_workspace", "token": token_id},
    )


def signed_in_user(request: HttpRequest) -> User:
    """`request.user` where a login is already required (workspace pages, the admin): the
    User, typed as one. PermissionDenied for an anonymous request that got this far."""
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise PermissionDenied("Sign in first.")
    return user


if TYPE_CHECKING:
    from django.views import View
    from django.views.generic.base import ContextMixin

    class _WorkspaceView(ContextMixin, View):
        """What the mixin is combined with: a View, with a context when it renders one."""

else:
    _WorkspaceView = object


class WorkspaceMixin(LoginRequiredMixin, _WorkspaceView):
    """For workspace pages: resolves `slug`, checks membership, then the per-method role.

    `role_map` maps HTTP methods to the minimum role (Sentry's scope_map). It fails closed:
    a view whose handler for a method is not in its `role_map` does not import (a
    TypeError names it), and a request with an undeclared method gets 405. HEAD follows
    GET. Sets `self.workspace` and `self.membership`.
    """

    role_map: dict[str, str] = {}
    workspace: Workspace
    membership: Membership

    HANDLERS = ("get", "post", "put", "patch", "delete")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        undeclared = [
            m.upper() for m in cls.HANDLERS if hasattr(cls, m) and m.upper() not in cls.role_map
        ]
        if undeclared:
            raise TypeError(f"{cls.__name__}.role_map does not declare {', '.join(undeclared)}")

    def minimum_role(self, method: str) -> str | None:
        """The declared minimum role for `method`, or None (not declared: refused)."""
        method = method.upper()
        return self.role_map.get("GET" if method == "HEAD" else method)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.membership = resolve_membership(request.user, kwargs["slug"])
        self.workspace = self.membership.workspace
        minimum = self.minimum_role(request.method or "GET")
        if minimum is None:
            return self.http_method_not_allowed(request, *args, **kwargs)
        require_role(self.membership, minimum)
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(workspace=self.workspace, membership=self.membership)
        return context
