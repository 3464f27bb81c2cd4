"""Managing embeds through the JSON API (what the flow's Embed page does): list, create,
change, delete. What visitors call is chat/embed_views.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from accounts.api_auth import DbInt, WorkspaceSlug, context, minimum_role
from accounts.models import Role
from accounts.tenancy import get_scoped, require_flow_in_scope
from chat import embeds
from chat.models import Embed
from flows.access import access_flow

router = Router(tags=["embeds"])


class EmbedIn(Schema):
    name: str = Field(..., max_length=200)
    allowed_origins: list[str] = Field(..., max_length=100)
    title: str = Field("", max_length=200)
    welcome_message: str = Field("", max_length=1000)
    accent_color: str = Field("#2563eb", max_length=20)
    show_sources: bool = True
    visitor_runs_per_minute: int = Field(5, ge=1, le=600)
    runs_per_minute: int = Field(60, ge=1, le=10_000)
    enabled: bool = True


class EmbedOut(Schema):
    id: int
    flow: int
    public_id: str = Field(..., description="The embed token (public: it is in the page).")
    name: str
    allowed_origins: list[str]
    title: str
    welcome_message: str
    accent_color: str
    show_sources: bool
    visitor_runs_per_minute: int
    runs_per_minute: int
    enabled: bool
    created_by: str | None
    created_at: datetime
    chat_path: str = Field(..., description="The chat page to frame (an iframe's src).")
    script_path: str = Field(..., description="The chat bubble's script (a <script>'s src).")


def embed_out(embed: Embed) -> dict[str, Any]:
    return {
        "id": embed.pk,
        "flow": embed.flow_id,
        "public_id": embed.public_id,
        "name": embed.name,
        "allowed_origins": embed.allowed_origins,
        "title": embed.title,
        "welcome_message": embed.welcome_message,
        "accent_color": embed.accent_color,
        "show_sources": embed.show_sources,
        "visitor_runs_per_minute": embed.visitor_runs_per_minute,
        "runs_per_minute": embed.runs_per_minute,
        "enabled": embed.enabled,
        "created_by": embed.created_by.email if embed.created_by else None,
        "created_at": embed.created_at,
        "chat_path": f"/embed/{embed.public_id}/",
        "script_path": "/static/flowdeck-embed.js",
    }


def _settings(payload: EmbedIn) -> embeds.EmbedSettings:
    return embeds.EmbedSettings(**payload.dict())


def _embed(request: HttpRequest, embed_id: int) -> Embed:
    membership = context(request).membership
    embed = get_scoped(Embed, membership.workspace, pk=embed_id)
    require_flow_in_scope(membership, embed.flow_id, f"embed:{embed.pk}")
    return embed


@router.get("flows/{flow_id}/embeds", response=list[EmbedOut])
@minimum_role(Role.VIEWER)
def embed_list(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    return [embed_out(e) for e in embeds.embeds_of(context(request).workspace, flow)]


@router.post("flows/{flow_id}/embeds", response={201: EmbedOut})
@minimum_role(Role.EDITOR)  # its visitors start runs as the member who made it
def embed_create(
    request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, payload: EmbedIn
) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    embed = embeds.embed_create(
        workspace=context(request).workspace,
        acting=context(request).membership,
        flow=flow,
        settings=_settings(payload),
    )
    return Status(201, embed_out(embed))


@router.put("embeds/{embed_id}", response=EmbedOut)
@minimum_role(Role.EDITOR)
def embed_update(
    request: HttpRequest, slug: WorkspaceSlug, embed_id: DbInt, payload: EmbedIn
) -> Any:
    embed = embeds.embed_update(
        workspace=context(request).workspace,
        acting=context(request).membership,
        embed=_embed(request, embed_id),
        settings=_settings(payload),
    )
    return embed_out(embed)


@router.delete("embeds/{embed_id}", response={204: None})
@minimum_role(Role.EDITOR)
def embed_delete(request: HttpRequest, slug: WorkspaceSlug, embed_id: DbInt) -> Any:
    embeds.embed_delete(
        workspace=context(request).workspace,
        acting=context(request).membership,
        embed=_embed(request, embed_id),
    )
    return Status(204, None)
