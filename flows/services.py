"""Writes for flows: flows and versions, credentials, the whitelist, documents.

Keyword-only, typed, atomic. Role checks take the acting membership; flow versions are
never edited, only added.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts.models import Membership, Role, User, Workspace
from accounts.tenancy import require_role, scoped
from audit.services import credential_diff, credential_snapshot, record
from config.jsontext import UnstorableText, check_text
from flows import subflows
from flows.builder import GraphInvalid, Problem, shape_problems, validate_graph
from flows.components.registry import REGISTRY
from flows.crypto import encrypt
from flows.endpoints import EndpointRefused, check_model_endpoint
from flows.models import (
    ComponentPolicy,
    ComponentPolicyChange,
    Credential,
    Flow,
    FlowDraft,
    FlowVersion,
    Provider,
    WorkspaceComponentPolicy,
    WorkspaceComponentPolicyChange,
)
from flows.providers import ConnectionCheck, check_connection
from flows.selectors import decrypted, platform_policy
from knowledge.models import KnowledgeDocument

log = logging.getLogger(__name__)

NAME_MAX = 200
EMPTY_GRAPH: dict[str, list] = {"nodes": [], "edges": []}


def graph_checksum(graph: Any) -> str:
    """SHA-256 of the canonical JSON of `graph` (sorted keys, no whitespace)."""
    canonical = json.dumps(graph, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _clean_name(name: str, *, what: str = "name", limit: int = NAME_MAX) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({what: ["This field is required."]})
    if len(name) > limit:
        raise ValidationError({what: [f"At most {limit} characters."]})
    return name


# --- flows ----------------------------------------------------------------------------------
@transaction.atomic
def flow_create(
    *,
    workspace: Workspace,
    acting: Membership,
    name: str,
    description: str = "",
    graph: dict | None = None,
    note: str = "",
    origin: str = "",
) -> Flow:
    """A new flow; with `graph`, its first version (validated) too. `origin` says where it
    came from in the audit entry ("import", "template:<key>")."""
    require_role(acting, Role.EDITOR)
    if acting.workspace_id != workspace.pk:
        raise ValidationError("The membership is not of this workspace.")
    if len(description or "") > 5000:
        raise ValidationError({"description": ["At most 5000 characters."]})
    flow = Flow.objects.create(
        workspace=workspace,
        name=_clean_name(name),
        description=description or "",
        created_by=acting.user,
    )
    record(
        action="flow.create",
        workspace=workspace,
        actor=acting.user,
        target=f"flow:{flow.pk}",
        after={"name": flow.name, **({"origin": origin} if origin else {})},
    )
    if graph is not None:
        flow_version_create(flow=flow, graph=graph, acting=acting.user, note=note)
    return flow


@transaction.atomic
def flow_rename(*, workspace: Workspace, acting: Membership, flow: Flow, name: str) -> Flow:
    require_role(acting, Role.EDITOR)
    _same_workspace(workspace, flow)
    before = {"name": flow.name}
    flow.name = _clean_name(name)
    flow.save(update_fields=["name", "updated_at"])
    record(
        action="flow.rename",
        workspace=workspace,
        actor=acting.user,
        target=f"flow:{flow.pk}",
        before=before,
        after={"name": flow.name},
    )
    return flow


@transaction.atomic
def flow_update(
    *, workspace: Workspace, acting: Membership, flow: Flow, name: str, description: str
) -> Flow:
    require_role(acting, Role.EDITOR)
    _same_workspace(workspace, flow)
    if len(description or "") > 5000:
        raise ValidationError({"description": ["At most 5000 characters."]})
    before = {"name": flow.name, "description": flow.description}
    flow.name = _clean_name(name)
    flow.description = description or ""
    flow.save(update_fields=["name", "description", "updated_at"])
    record(
        action="flow.rename",
        workspace=workspace,
        actor=acting.user,
        target=f"flow:{flow.pk}",
        before={"name": before["name"]},
        after={"name": flow.name, "description_changed": before["description"] != flow.description},
    )
    return flow


@transaction.atomic
def flow_duplicate(*, workspace: Workspace, acting: Membership, flow: Flow) -> Flow:
    """A new flow named "<name> (copy)" whose first version is the original's latest graph."""
    require_role(acting, Role.EDITOR)
    _same_workspace(workspace, flow)
    latest = scoped(FlowVersion, workspace).filter(flow=flow).order_by("-number").first()
    copy = Flow.objects.create(
        workspace=workspace,
        name=f"{flow.name} (copy)"[:NAME_MAX],
        description=flow.description,
        created_by=acting.user,
    )
    record(
        action="flow.create",
        workspace=workspace,
        actor=acting.user,
        target=f"flow:{copy.pk}",
        after={"name": copy.name, "duplicate_of": flow.pk},
    )
    if latest is not None:
        _add_version(
            flow=copy,
            graph=latest.graph,
            acting=acting.user,
            note=f"copied from {flow.name} v{latest.number}"[:500],
            is_draft=False,
        )
    return copy


@transaction.atomic
def flow_delete(*, workspace: Workspace, acting: Membership, flow: Flow) -> None:
    """Soft delete: runs keep pointing at the versions they ran."""
    require_role(acting, Role.EDITOR)
    _same_workspace(workspace, flow)
    flow.deleted_at = timezone.now()
    flow.save(update_fields=["deleted_at", "updated_at"])
    record(
        action="flow.delete",
        workspace=workspace,
        actor=acting.user,
        target=f"flow:{flow.pk}",
        before={"name": flow.name},
    )


def _same_workspace(workspace: Workspace, obj: Any) -> None:
    if obj.workspace_id != workspace.pk:
        raise ValidationError("Not found.")  # never happens through scoped lookups


@transaction.atomic
def scratch_flow_for(*, workspace: Workspace, user: User) -> Flow:
    """The per-user flow that holds draft versions of editor graphs run without a flow."""
    flow = (
        scoped(Flow, workspace)
        .filter(is_scratch=True, created_by=user, deleted_at__isnull=True)
        .order_by("pk")
        .first()
    )
    if flow is None:
        flow = Flow.objects.create(
            workspace=workspace,
            name=f"Scratch runs of {user.email}"[:NAME_MAX],
            created_by=user,
            is_scratch=True,
        )
    return flow


def _add_version(
    *, flow: Flow, graph: dict, acting: User | None, note: str, is_draft: bool
) -> FlowVersion:
    # Lock the flow row so concurrent saves get consecutive numbers.
    Flow.objects.select_for_update().filter(pk=flow.pk).first()
    last = FlowVersion.objects.filter(flow=flow).aggregate(n=Max("number"))["n"] or 0
    version = FlowVersion.objects.create(
        workspace_id=flow.workspace_id,
        flow=flow,
        number=last + 1,
        graph=graph,
        checksum=graph_checksum(graph),
        note=(note or "")[:500],
        is_draft=is_draft,
        created_by=acting,
    )
    Flow.objects.filter(pk=flow.pk).update(updated_at=timezone.now())
    record(
        action="flow.version_save",
        workspace=flow.workspace,
        actor=acting,
        target=f"flow:{flow.pk}",
        after={"version": version.number, "checksum": version.checksum, "draft": is_draft},
    )
    return version


@transaction.atomic
def flow_version_create(
    *,
    flow: Flow,
    graph: dict,
    acting: User | None,
    note: str = "",
    is_draft: bool = False,
) -> FlowVersion:
    """Save `graph` as the flow's next immutable version (validated first).

    Raises flows.builder.GraphInvalid with every problem. Role checks are the caller's
    (API: editor; runs: editor).
    """
    problems = validate_graph(graph, flow.workspace)
    if not problems and (through := subflows.contains(flow.workspace, graph, flow.pk)):
        problems = [
            Problem(
                through,
                "flow",
                "subflow_cycle",
                "This sub-flow contains the flow being saved (directly or through others): a "
                "flow cannot run itself.",
            )
        ]
    if problems:
        raise GraphInvalid(problems)
    return _add_version(flow=flow, graph=graph, acting=acting, note=note, is_draft=is_draft)


def latest_saved_version(flow: Flow) -> FlowVersion | None:
    """The newest version that was saved on purpose (not a draft that ran)."""
    return (
        scoped(FlowVersion, flow.workspace)
        .filter(flow=flow, is_draft=False)
        .order_by("-number")
        .first()
    )


@transaction.atomic
def flow_version_save(
    *, flow: Flow, graph: dict, acting: User | None, note: str = ""
) -> tuple[FlowVersion, bool]:
    """Save the editor's graph as a named version: (the version, whether it is new).

    Saving a graph equal to the newest saved version (same checksum) adds nothing and
    answers with that version, so pressing Save twice never makes a duplicate.
    """
    Flow.objects.select_for_update().filter(pk=flow.pk).first()
    latest = latest_saved_version(flow)
    if latest is not None and latest.checksum == graph_checksum(graph):
        return latest, False
    return flow_version_create(flow=flow, graph=graph, acting=acting, note=note), True


# --- drafts ---------------------------------------------------------------------------------
class DraftConflict(Exception):
    """Another editor saved the draft since `base_revision`: `current` is theirs (None if
    they discarded it)."""

    def __init__(self, current: FlowDraft | None) -> None:
        super().__init__("Another editor changed this draft.")
        self.current = current


def check_draft_graph(graph: Any) -> None:
    """A draft is kept, not run: only its shape, size and storability are checked (a
    ValidationError says what is wrong); every validation problem may remain."""
    if not isinstance(graph, dict):
        raise ValidationError({"graph": ["A draft is a flow graph: a JSON object."]})
    for key in ("nodes", "edges", "annotations"):
        if key in graph and not isinstance(graph[key], list):
            raise ValidationError({"graph": [f"A draft's `{key}` is a list."]})
    try:
        check_text(graph)
    except UnstorableText as exc:
        raise ValidationError({"graph": [str(exc)]}) from exc
    problems = shape_problems(graph)
    if problems:
        raise ValidationError({"graph": [problems[0].message]})


@transaction.atomic
def draft_save(
    *,
    workspace: Workspace,
    acting: Membership,
    flow: Flow,
    graph: dict,
    base_revision: int,
    base_version: int | None = None,
) -> FlowDraft:
    """Keep the editor's canvas as the flow's draft (not validated, not audited: it runs
    every few seconds). `base_revision` is the revision the editor last saw (0: none);
    if another editor saved or discarded since, DraftConflict carries theirs."""
    require_role(acting, Role.EDITOR)
    _same_workspace(workspace, flow)
    check_draft_graph(graph)
    # The flow row is the lock: two editors' saves of one draft are serialised.
    Flow.objects.select_for_update().filter(pk=flow.pk).first()
    draft = scoped(FlowDraft, workspace).filter(flow=flow).first()
    current = draft.revision if draft is not None else 0
    if base_revision != current:
        raise DraftConflict(draft)
    if draft is None:
        return FlowDraft.objects.create(
            workspace=workspace,
            flow=flow,
            graph=graph,
            revision=1,
            base_version=base_version,
            updated_by=acting.user,
        )
    draft.graph = graph
    draft.revision = current + 1
    if base_version is not None:
        draft.base_version = base_version
    draft.updated_by = acting.user
    draft.save(update_fields=["graph", "revision", "base_version", "updated_by", "updated_at"])
    return draft


@transaction.atomic
def draft_discard(*, workspace: Workspace, acting: Membership, flow: Flow) -> bool:
    """Throw the flow's draft away (the editor goes back to the latest version); recorded
    in the audit trail. Whether there was one."""
    require_role(acting, Role.EDITOR)
    _same_workspace(workspace, flow)
    draft = scoped(FlowDraft, workspace).filter(flow=flow).select_for_update().first()
    if draft is None:
        return False
    before = {
        "revision": draft.revision,
        "checksum": graph_checksum(draft.graph),
        "updated_by": draft.updated_by.email if draft.updated_by else None,
    }
    draft.delete()
    record(
        action="flow.draft_discard",
        workspace=workspace,
        actor=acting.user,
        target=f"flow:{flow.pk}",
        before=before,
    )
    return True


# --- credentials ----------------------------------------------------------------------------
def _clean_credential(provider: str, base_url: str) -> tuple[str, str]:
    if provider not in Provider.values:
        raise ValidationError({"provider": [f"One of: {', '.join(Provider.values)}."]})
    base_url = (base_url or "").strip()
    if base_url:
        try:
            URLValidator(schemes=["http", "https"])(base_url)
        except ValidationError as exc:
            raise ValidationError({"base_url": ["Enter an http(s) URL."]}) from exc
        if len(base_url) > 500:
            raise ValidationError({"base_url": ["At most 500 characters."]})
        try:
            check_model_endpoint(base_url)
        except EndpointRefused as exc:
            raise ValidationError({"base_url": [str(exc)]}) from exc
    return provider, base_url


def _clean_api_key(api_key: str) -> str:
    if len(api_key) > 4096:
        raise ValidationError({"api_key": ["At most 4096 characters."]})
    return api_key.strip()


@transaction.atomic
def credential_create(
    *,
    workspace: Workspace,
    acting: Membership,
    name: str,
    provider: str,
    base_url: str = "",
    api_key: str = "",
) -> Credential:
    """A provider connection; the key is encrypted at once and never returned."""
    require_role(acting, Role.ADMIN)
    name = _clean_name(name, limit=100)
    provider, base_url = _clean_credential(provider, base_url)
    if scoped(Credential, workspace).filter(name=name).exists():
        raise ValidationError({"name": ["A credential with this name exists."]})
    credential = Credential.objects.create(
        workspace=workspace,
        name=name,
        provider=provider,
        base_url=base_url,
        api_key_encrypted=encrypt(_clean_api_key(api_key)),
        created_by=acting.user,
    )
    record(
        action="credential.create",
        workspace=workspace,
        actor=acting.user,
        target=f"credential:{credential.pk}",
        after=credential_snapshot(credential),
    )
    log.info("credential created", extra={"workspace": workspace.slug, "credential": credential.pk})
    return credential


@transaction.atomic
def credential_update(
    *,
    workspace: Workspace,
    acting: Membership,
    credential: Credential,
    name: str | None = None,
    provider: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
) -> Credential:
    """Change what is given; `api_key=None` keeps the stored key, "" clears it."""
    require_role(acting, Role.ADMIN)
    _same_workspace(workspace, credential)
    if name is not None:
        name = _clean_name(name, limit=100)
        if scoped(Credential, workspace).filter(name=name).exclude(pk=credential.pk).exists():
            raise ValidationError({"name": ["A credential with this name exists."]})
        credential.name = name
    credential.provider, credential.base_url = _clean_credential(
        provider if provider is not None else credential.provider,
        base_url if base_url is not None else credential.base_url,
    )
    if api_key is not None:
        credential.api_key_encrypted = encrypt(_clean_api_key(api_key))
    diff = credential_diff(credential)
    credential.save()
    record(
        action="credential.update",
        workspace=workspace,
        actor=acting.user,
        target=f"credential:{credential.pk}",
        **diff,
    )
    return credential


@transaction.atomic
def credential_delete(*, workspace: Workspace, acting: Membership, credential: Credential) -> None:
    require_role(acting, Role.ADMIN)
    _same_workspace(workspace, credential)
    before, label = credential_snapshot(credential), f"credential:{credential.pk}"
    credential.delete()
    record(
        action="credential.delete",
        workspace=workspace,
        actor=acting.user,
        target=label,
        before=before,
    )


def credential_test(
    *, workspace: Workspace, acting: Membership, credential: Credential
) -> ConnectionCheck:
    """Make one cheap request with the credential (list the provider's models) and say what
    the provider answered; recorded, since it sends the key out. Not one transaction: the
    request is made before anything is written."""
    require_role(acting, Role.ADMIN)
    _same_workspace(workspace, credential)
    check = check_connection(decrypted(credential))
    with transaction.atomic():
        record(
            action="credential.test",
            workspace=workspace,
            actor=acting.user,
            target=f"credential:{credential.pk}",
            after={"ok": check.ok, "models": len(check.models)},
        )
    return check


# --- the whitelist --------------------------------------------------------------------------
def _registered(key: str) -> None:
    if key not in REGISTRY:
        raise ValidationError({"key": [f"No component `{str(key)[:100]}` exists."]})


@transaction.atomic
def platform_policy_set(*, key: str, enabled: bool, acting: User) -> ComponentPolicy:
    """Platform staff enable or disable component `key` everywhere; the change is recorded."""
    if not (acting.is_staff or acting.is_superuser):
        raise PermissionDenied("Only platform staff change the platform whitelist.")
    _registered(key)
    policy = ComponentPolicy.objects.select_for_update().filter(key=key).first()
    before = policy.enabled if policy is not None else None
    if policy is None:
        policy = ComponentPolicy(key=key)
    policy.enabled = enabled
    policy.updated_by = acting
    policy.save()
    record_platform_change(key=key, before=before, after=enabled, acting=acting)
    return policy


def record_platform_change(
    *, key: str, before: bool | None, after: bool | None, acting: User | None
) -> None:
    """Write a platform whitelist history row (call inside the change's transaction)."""
    _policy_changed(None, key=key, before=before, after=after, acting=acting)


def _policy_changed(
    workspace: Workspace | None,
    *,
    key: str,
    before: bool | None,
    after: bool | None,
    acting: User | None,
) -> None:
    """The history row of a whitelist change (the platform's, or `workspace`'s) and its audit
    entry; call inside the change's transaction, after its row locks."""
    before_state = None if before is None else {"enabled": before}
    after_state = None if after is None else {"enabled": after}
    if workspace is None:
        ComponentPolicyChange.objects.create(
            key=key, changed_by=acting, before=before_state, after=after_state
        )
    else:
        WorkspaceComponentPolicyChange.objects.create(
            workspace=workspace,
            key=key,
            changed_by=acting,
            before=before_state,
            after=after_state,
        )
    record(
        action="whitelist.workspace_change" if workspace else "whitelist.platform_change",
        workspace=workspace,
        actor=acting,
        target=f"component:{key}",
        before=before_state,
        after=after_state,
    )


@transaction.atomic
def workspace_policy_set(
    *, workspace: Workspace, acting: Membership, changes: dict[str, bool]
) -> None:
    """A workspace admin narrows the whitelist: disable keys, or re-enable keys they had
    disabled. Enabling a key the platform disabled is refused (it cannot widen)."""
    require_role(acting, Role.ADMIN)
    platform = platform_policy()
    for key, enabled in changes.items():
        _registered(key)
        if not isinstance(enabled, bool):
            raise ValidationError({key: ["true or false."]})
        if enabled and not platform[key]:
            raise ValidationError(
                {key: ["Disabled by the platform: a workspace cannot enable it."]}
            )
    changed: list[tuple[str, bool, bool]] = []  # recorded after the loop: row locks first
    for key, enabled in sorted(changes.items()):
        row = (
            WorkspaceComponentPolicy.objects.select_for_update()
            .filter(workspace=workspace, key=key)
            .first()
        )
        before = row.enabled if row is not None else True
        if before == enabled:
            continue
        if enabled:
            assert row is not None  # `before` differs from `enabled`: a row disabled it
            row.delete()  # back to the platform's word
        else:
            WorkspaceComponentPolicy.objects.update_or_create(
                workspace=workspace,
                key=key,
                defaults={"enabled": False, "updated_by": acting.user},
            )
        changed.append((key, before, enabled))
    for key, before, enabled in changed:
        _policy_changed(workspace, key=key, before=before, after=enabled, acting=acting.user)


# --- documents (now knowledge bases: the older door onto knowledge/) ---------------------------
DOCUMENT_MAX_CHARS = 200_000
COLLECTION_RE = r"^[A-Za-z0-9_-]{1,64}$"


@transaction.atomic
def document_create(
    *,
    workspace: Workspace,
    acting: Membership,
    title: str,
    content: str,
    collection: str = "default",
) -> KnowledgeDocument:
    """A text document in the knowledge base named `collection` (made if missing), indexed
    at once when it has no embeddings model: what docs.corpus and the older documents API
    call a collection is a knowledge base now."""
    from knowledge.services import UploadRefused, collection_document_add

    require_role(acting, Role.EDITOR)
    if not re.match(COLLECTION_RE, collection or ""):
        raise ValidationError({"collection": ["1-64 letters, digits, '-' or '_'."]})
    if not content or len(content) > DOCUMENT_MAX_CHARS:
        raise ValidationError({"content": [f"1 to {DOCUMENT_MAX_CHARS} characters."]})
    try:
        upload = collection_document_add(
            workspace=workspace,
            acting=acting,
            collection=collection,
            title=_clean_name(title, what="title"),
            text=content,
        )
    except UploadRefused as exc:
        raise ValidationError({"content": [exc.message]}) from exc
    document = upload.document
    record(
        action="document.create",
        workspace=workspace,
        actor=acting.user,
        target=f"document:{document.pk}",
        after={"title": document.name, "collection": collection, "chars": len(content)},
    )
    return document


@transaction.atomic
def document_delete(
    *, workspace: Workspace, acting: Membership, document: KnowledgeDocument
) -> None:
    """Delete a document of a collection (a knowledge base) with its chunks."""
    from knowledge.services import document_delete as knowledge_document_delete

    require_role(acting, Role.EDITOR)
    _same_workspace(workspace, document)
    before = {"title": document.name, "collection": document.knowledge_base.name}
    label = f"document:{document.pk}"
    knowledge_document_delete(workspace=workspace, acting=acting, document=document)
    record(
        action="document.delete",
        workspace=workspace,
        actor=acting.user,
        target=label,
        before=before,
    )
