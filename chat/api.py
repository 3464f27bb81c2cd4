"""Publishing API: a flow's published version (chat.services). The one-call run API and the
OpenAI-compatible endpoint are streaming views (chat/calls.py, chat/openai_compat.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from accounts.api_auth import DbInt, WorkspaceSlug, context, minimum_role
from accounts.models import Role
from chat import selectors, services
from chat.models import Publication
from flows.access import access_flow
from flows.api import InvalidGraphOut
from flows.builder import GraphInvalid

router = Router(tags=["publishing"])


class PublishIn(Schema):
    version: int = Field(..., ge=1, le=2**31 - 1, description="The version to publish.")


class PublicationOut(Schema):
    """The flow's published version (null: none), and its model name on `/v1/models`."""

    flow: int
    version: int | None
    model: str | None
    published_by: str | None
    published_at: datetime | None


def _publication_out(flow_id: int, publication: Publication | None) -> dict[str, Any]:
    if publication is None:
        return {
            "flow": flow_id,
            "version": None,
            "model": None,
            "published_by": None,
            "published_at": None,
        }
    return {
        "flow": flow_id,
        "version": publication.version.number,
        "model": publication.model_name,
        "published_by": publication.published_by.email if publication.published_by else None,
        "published_at": publication.published_at,
    }


@router.get("flows/{flow_id}/publication", response=PublicationOut)
@minimum_role(Role.VIEWER)
def publication_get(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    return _publication_out(flow.pk, selectors.publication_of(flow))


@router.post(
    "flows/{flow_id}/publication",
    response={200: PublicationOut, 400: InvalidGraphOut},
    summary="Publish a version (an older one: a rollback)",
)
@minimum_role(Role.EDITOR)  # editors save and run versions; publishing one is theirs too
def publication_set(
    request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, payload: PublishIn
) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    try:
        publication = services.flow_publish(
            workspace=context(request).workspace,
            acting=context(request).membership,
            flow=flow,
            version_number=payload.version,
        )
    except GraphInvalid as exc:
        return Status(
            400,
            {"detail": "This version's graph is not valid now.", "problems": exc.problems},
        )
    return _publication_out(flow.pk, publication)


@router.delete("flows/{flow_id}/publication", response={204: None}, summary="Unpublish")
@minimum_role(Role.EDITOR)
def publication_delete(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    services.flow_unpublish(
        workspace=context(request).workspace, acting=context(request).membership, flow=flow
    )
    return Status(204, None)
