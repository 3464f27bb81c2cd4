"""Accounts API: the workspace as the caller sees it, and its members."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema

from accounts import selectors
from accounts.api_auth import WorkspaceSlug, context, minimum_role
from accounts.models import Role

router = Router(tags=["workspace"])


class WorkspaceOut(Schema):
    slug: str
    name: str
    role: str


class MemberOut(Schema):
    id: int
    email: str
    name: str
    role: str


@router.get("", response=WorkspaceOut, summary="The workspace and the caller's role")
@minimum_role(Role.VIEWER)
def workspace_detail(request: HttpRequest, slug: WorkspaceSlug) -> dict:
    membership = context(request).membership
    return {"slug": slug, "name": membership.workspace.name, "role": membership.role}


@router.get("members", response=list[MemberOut])
@minimum_role(Role.VIEWER)
def members(request: HttpRequest, slug: WorkspaceSlug) -> list[dict]:
    return [
        {"id": m.pk, "email": m.user.email, "name": m.user.name, "role": m.role}
        for m in selectors.members_of(context(request).workspace)
    ]
