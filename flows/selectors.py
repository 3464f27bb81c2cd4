"""Reads for flows: every lookup takes the workspace."""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet, Subquery, Value

from accounts.models import Workspace
from accounts.tenancy import get_scoped, scoped
from flows.components.base import DecryptedCredential
from flows.components.registry import REGISTRY
from flows.crypto import decrypt
from flows.models import (
    ComponentPolicy,
    Credential,
    Flow,
    FlowDraft,
    FlowVersion,
    WorkspaceComponentPolicy,
)
from knowledge.models import KnowledgeDocument


def flows_of(workspace: Workspace) -> QuerySet[Flow]:
    """Live (not deleted, not scratch) flows of `workspace`, most recently changed first."""
    return scoped(Flow, workspace).filter(deleted_at__isnull=True, is_scratch=False)


def flows_for_list(workspace: Workspace, *, search: str = "") -> QuerySet[Flow]:
    """Live flows of `workspace` with their latest version number, newest first."""
    latest = scoped(FlowVersion, workspace).filter(flow=OuterRef("pk")).order_by("-number")
    flows = (
        flows_of(workspace)
        .select_related("created_by")
        .annotate(latest_version=Subquery(latest.values("number")[:1]))
    )
    if search:
        flows = flows.filter(name__icontains=search)
    return flows.order_by("-updated_at", "-pk")


def get_flow(workspace: Workspace, flow_id: object) -> Flow:
    """A live flow of `workspace`, or Http404 (also for other workspaces' flows)."""
    return get_scoped(Flow, workspace, pk=flow_id, deleted_at__isnull=True)


def versions_of(flow: Flow) -> QuerySet[FlowVersion]:
    return scoped(FlowVersion, flow.workspace).filter(flow=flow).order_by("-number")


def latest_version(flow: Flow) -> FlowVersion | None:
    return versions_of(flow).first()


def get_version(flow: Flow, number: object) -> FlowVersion:
    return get_scoped(FlowVersion, flow.workspace, flow=flow, number=number)


def draft_of(flow: Flow) -> FlowDraft | None:
    """The flow's working draft (FlowDraft), or None."""
    return scoped(FlowDraft, flow.workspace).filter(flow=flow).select_related("updated_by").first()


def credentials_of(workspace: Workspace) -> QuerySet[Credential]:
    return scoped(Credential, workspace)


def get_credential(workspace: Workspace, credential_id: object) -> Credential:
    return get_scoped(Credential, workspace, pk=credential_id)


def credential_row(workspace: Workspace, credential_id: object) -> Credential | None:
    """This workspace's credential `credential_id` (its key still encrypted); None if not
    found here or not an id."""
    if isinstance(credential_id, bool) or not isinstance(credential_id, int):
        return None
    return scoped(Credential, workspace).filter(pk=credential_id).first()


def decrypted(credential: Credential) -> DecryptedCredential:
    """A credential's usable values, for building a node."""
    return DecryptedCredential(
        id=credential.pk,
        provider=credential.provider,
        base_url=credential.base_url,
        api_key=decrypt(credential.api_key_encrypted),
    )


def credential_decrypted(workspace: Workspace, credential_id: int) -> DecryptedCredential | None:
    """This workspace's credential, decrypted for building a node; None if not found here."""
    credential = credential_row(workspace, credential_id)
    return decrypted(credential) if credential is not None else None


def credential_exists(workspace: Workspace, credential_id: object) -> bool:
    if isinstance(credential_id, bool) or not isinstance(credential_id, int):
        return False
    return scoped(Credential, workspace).filter(pk=credential_id).exists()


def _with_defaults(platform_rows: dict[str, bool]) -> dict[str, bool]:
    """Registered key -> enabled platform-wide (the component default where no row exists)."""
    return {key: platform_rows.get(key, cls.default_enabled) for key, cls in REGISTRY.items()}


def platform_policy() -> dict[str, bool]:
    """Registered key -> enabled platform-wide."""
    return _with_defaults(dict(ComponentPolicy.objects.values_list("key", "enabled")))


def policies(workspace: Workspace) -> tuple[dict[str, bool], dict[str, bool]]:
    """(the platform policy, the workspace's own switches) in one query: it is on every
    run's path to its first token, twice (at start and in the worker)."""
    # (no ORDER BY: SQLite refuses one inside a UNION's parts)
    platform_rows = ComponentPolicy.objects.order_by().annotate(scope=Value(0))
    workspace_rows = scoped(WorkspaceComponentPolicy, workspace).order_by().annotate(scope=Value(1))
    switches: tuple[dict[str, bool], dict[str, bool]] = ({}, {})
    for scope, key, enabled in platform_rows.values_list("scope", "key", "enabled").union(
        workspace_rows.values_list("scope", "key", "enabled"), all=True
    ):
        switches[scope][key] = enabled
    return _with_defaults(switches[0]), switches[1]


def enabled_keys(workspace: Workspace) -> set[str]:
    """Component keys this workspace may use: registered, enabled by the platform, and not
    disabled by the workspace."""
    platform, narrowed = policies(workspace)
    return {key for key, enabled in platform.items() if enabled and narrowed.get(key, True)}


def whitelist_for(workspace: Workspace) -> list[dict]:
    """Every registered component with the platform and workspace switches and the outcome."""
    platform, narrowed = policies(workspace)
    return [
        {
            "key": key,
            "label": REGISTRY[key].label,
            "platform_enabled": platform[key],
            "workspace_enabled": narrowed.get(key, True),
            "enabled": platform[key] and narrowed.get(key, True),
        }
        for key in sorted(REGISTRY)
    ]


def documents_of(
    workspace: Workspace, collection: str | None = None
) -> QuerySet[KnowledgeDocument]:
    """The workspace's knowledge documents (in the knowledge base named `collection`)."""
    documents = scoped(KnowledgeDocument, workspace).order_by("knowledge_base__name", "name", "pk")
    if collection is not None:
        documents = documents.filter(knowledge_base__name=collection)
    return documents
