"""The flows API: component catalog, credentials, flows and versions, validation, the
workspace whitelist and documents. Thin: parse, check the role, call a service/selector.

Every route declares `slug: WorkspaceSlug` and its minimum role (`@minimum_role`, enforced
by config.api); WorkspaceAuth has already resolved the membership (`context(request)`).
Viewers read; editors write flows and documents; admins manage credentials and the
whitelist. API keys are write-only.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import ValidationError as PydanticError

from accounts.api_auth import DbInt, WorkspaceSlug, context, for_flow_keys, minimum_role
from accounts.models import Role
from accounts.tenancy import get_scoped
from flows import selectors, services, transfer
from flows.access import access_credential, access_flow
from flows.builder import GraphInvalid, validate_graph
from flows.components.logic import MAX_MATCH_CHARS, rule_matches
from flows.components.logic import Router as RouterComponent
from flows.components.patterns import PatternError
from flows.components.registry import all_components
from flows.diff import graph_diff
from flows.messages import param_message
from flows.models import Credential, Flow, FlowDraft, FlowVersion
from flows.starters import STARTERS
from knowledge.models import KnowledgeDocument

router = Router(tags=["flows"])


# --- schemas ----------------------------------------------------------------------------------
class PortOut(Schema):
    name: str
    type: str
    label: str
    required: bool
    multi: bool


class ComponentOut(Schema):
    key: str
    label: str
    category: str
    description: str
    inputs: list[PortOut]
    outputs: list[PortOut]
    params: dict[str, Any]


class ProblemOut(Schema):
    node_id: str | None
    field: str
    code: str
    message: str


class ValidateIn(Schema):
    graph: Any


class ValidateOut(Schema):
    valid: bool
    problems: list[ProblemOut]


class InvalidGraphOut(Schema):
    """400: the graph is not valid (`problems`), or a field is (`detail` maps field ->
    messages)."""

    detail: str | dict[str, Any]
    problems: list[ProblemOut] = []


class CredentialIn(Schema):
    name: str
    provider: str = "openai"
    base_url: str = ""
    api_key: str = ""


class CredentialUpdateIn(Schema):
    name: str | None = None
    provider: str | None = None
    base_url: str | None = None
    api_key: str | None = None


class CredentialOut(Schema):
    """Never carries the API key: only whether one is set."""

    id: int
    name: str
    provider: str
    base_url: str
    has_api_key: bool
    created_at: datetime
    updated_at: datetime


class FlowIn(Schema):
    name: str
    description: str = ""
    graph: Any = None
    note: str = ""
    template: str | None = Field(
        None, description="A starter template's key (GET flow-templates) instead of `graph`."
    )


class FlowUpdateIn(Schema):
    name: str
    description: str = ""


class VersionSummaryOut(Schema):
    number: DbInt
    note: str
    is_draft: bool
    checksum: str
    created_at: datetime
    created_by: str | None


class VersionOut(VersionSummaryOut):
    graph: Any
    unchanged: bool = Field(
        False, description="Saved nothing: the graph equals this, the newest saved version."
    )


class DraftIn(Schema):
    graph: Any
    base_revision: int = Field(
        ...,
        ge=0,
        le=2**31 - 1,
        description="The draft revision the editor last saw (0: none).",
    )
    base_version: int | None = Field(None, ge=1, le=2**31 - 1)


class DraftOut(Schema):
    """The flow's working draft; `revision` 0 and `graph` null when there is none."""

    revision: int
    graph: Any = None
    base_version: int | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


class DraftConflictOut(Schema):
    """409: another editor saved (or discarded) the draft since `base_revision`."""

    detail: str
    draft: DraftOut


class ImportIn(Schema):
    document: Any = Field(..., description="The flow file (format flowdeck.flow).")
    name: str | None = Field(None, max_length=200)


class RefusedItemOut(Schema):
    node_id: str | None
    component: str | None
    reason: str


class ClearedItemOut(Schema):
    node_id: str | None
    param: str
    reason: str


class ImportReportOut(Schema):
    lands_as: str
    name: str
    description: str
    refused: list[RefusedItemOut]
    cleared: list[ClearedItemOut]
    problems: list[ProblemOut]
    notes: list[str]
    graph: Any = None


class ImportOut(Schema):
    flow: FlowOut
    report: ImportReportOut


class ImportRefusedOut(Schema):
    """400: the file was refused (`report` says why, item by item), or the body was not
    JSON at all (`detail` alone)."""

    detail: str | dict[str, Any]
    report: ImportReportOut | None = None


class FlowFileOut(Schema):
    format: str
    format_version: int
    name: str
    description: str
    graph: Any
    exported_at: str


class StarterOut(Schema):
    key: str
    name: str
    description: str
    try_input: str


class RouterPreviewIn(Schema):
    params: Any = Field(..., description="The router node's params: {rules, default_output}.")
    text: str = Field(..., max_length=MAX_MATCH_CHARS)


class RouterPreviewOut(Schema):
    """Which output `text` takes, computed by the server's own matcher (RE2)."""

    output: str | None
    rule: int | None = Field(None, description="1-based number of the matching rule.")
    problems: list[ProblemOut]


class ParamChangeOut(Schema):
    key: str
    before: str | None
    after: str | None


class NodeChangeOut(Schema):
    node_id: str
    changes: list[ParamChangeOut]


class VersionDiffOut(Schema):
    """What changed from version `a` to version `b` (flows.diff): values as JSON text."""

    a: int
    b: int
    added: list[str]
    removed: list[str]
    changed: list[NodeChangeOut]
    edges_added: list[str]
    edges_removed: list[str]
    components: dict[str, str]


class FlowOut(Schema):
    id: int
    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    latest_version: int | None


class FlowDetailOut(FlowOut):
    graph: Any
    versions: list[VersionSummaryOut]


class VersionIn(Schema):
    graph: Any
    note: str = ""
    is_draft: bool = False


class WhitelistEntryOut(Schema):
    key: str
    label: str
    platform_enabled: bool
    workspace_enabled: bool
    enabled: bool


class WhitelistIn(Schema):
    changes: dict[str, bool]


class DocumentIn(Schema):
    title: str
    content: str
    collection: str = "default"


class DocumentOut(Schema):
    id: int
    title: str
    collection: str
    chars: int
    created_at: datetime


class Message(Schema):
    detail: str


# --- helpers ----------------------------------------------------------------------------------
def _version_summary(version: FlowVersion) -> dict[str, Any]:
    return {
        "number": version.number,
        "note": version.note,
        "is_draft": version.is_draft,
        "checksum": version.checksum,
        "created_at": version.created_at,
        "created_by": version.created_by.email if version.created_by else None,
    }


def _flow_out(flow: Flow, latest: FlowVersion | None) -> dict[str, Any]:
    return {
        "id": flow.pk,
        "name": flow.name,
        "description": flow.description,
        "created_at": flow.created_at,
        "updated_at": flow.updated_at,
        "latest_version": latest.number if latest else None,
    }


def _credential_out(credential: Credential) -> dict[str, Any]:
    return {
        "id": credential.pk,
        "name": credential.name,
        "provider": credential.provider,
        "base_url": credential.base_url,
        "has_api_key": credential.has_api_key,
        "created_at": credential.created_at,
        "updated_at": credential.updated_at,
    }


def _invalid(exc: GraphInvalid) -> Any:
    return Status(400, {"detail": "The flow graph is not valid.", "problems": exc.problems})


# --- catalog and validation ---------------------------------------------------------------------
@router.get("components", response=list[ComponentOut], summary="Components enabled here")
@minimum_role(Role.VIEWER)
def components(request: HttpRequest, slug: WorkspaceSlug) -> list[dict[str, Any]]:
    enabled = selectors.enabled_keys(context(request).workspace)
    return [c.catalog_entry() for c in all_components() if c.key in enabled]


@router.post("flows/validate", response=ValidateOut, summary="Validate a graph, all problems")
@minimum_role(Role.EDITOR)
def flows_validate(request: HttpRequest, slug: WorkspaceSlug, payload: ValidateIn) -> dict:
    problems = validate_graph(payload.graph, context(request).workspace)
    return {"valid": not problems, "problems": problems}


# --- credentials --------------------------------------------------------------------------------
@router.get("credentials", response=list[CredentialOut])
@minimum_role(Role.VIEWER)
def credentials_list(request: HttpRequest, slug: WorkspaceSlug) -> list[dict[str, Any]]:
    return [_credential_out(c) for c in selectors.credentials_of(context(request).workspace)]


@router.post("credentials", response={201: CredentialOut})
@minimum_role(Role.ADMIN)
def credentials_create(request: HttpRequest, slug: WorkspaceSlug, payload: CredentialIn) -> Any:
    credential = services.credential_create(
        workspace=context(request).workspace,
        acting=context(request).membership,
        name=payload.name,
        provider=payload.provider,
        base_url=payload.base_url,
        api_key=payload.api_key,
    )
    return Status(201, _credential_out(credential))


@router.put("credentials/{credential_id}", response=CredentialOut)
@minimum_role(Role.ADMIN)
def credentials_update(
    request: HttpRequest, slug: WorkspaceSlug, credential_id: DbInt, payload: CredentialUpdateIn
) -> dict:
    credential = access_credential(context(request).membership, credential_id)
    credential = services.credential_update(
        workspace=context(request).workspace,
        acting=context(request).membership,
        credential=credential,
        name=payload.name,
        provider=payload.provider,
        base_url=payload.base_url,
        api_key=payload.api_key,
    )
    return _credential_out(credential)


@router.delete("credentials/{credential_id}", response={204: None})
@minimum_role(Role.ADMIN)
def credentials_delete(request: HttpRequest, slug: WorkspaceSlug, credential_id: DbInt) -> Any:
    credential = access_credential(context(request).membership, credential_id)
    services.credential_delete(
        workspace=context(request).workspace,
        acting=context(request).membership,
        credential=credential,
    )
    return Status(204, None)


class ConnectionCheckOut(Schema):
    ok: bool
    message: str
    models: list[str]


@router.post("credentials/{credential_id}/test", response=ConnectionCheckOut)
@minimum_role(Role.ADMIN)
def credentials_test(request: HttpRequest, slug: WorkspaceSlug, credential_id: DbInt) -> Any:
    """One cheap request with the credential (the provider's model list): whether the
    endpoint answers and takes the key, in the provider's words."""
    credential = access_credential(context(request).membership, credential_id)
    check = services.credential_test(
        workspace=context(request).workspace,
        acting=context(request).membership,
        credential=credential,
    )
    return {"ok": check.ok, "message": check.message, "models": check.models}


# --- flows and versions -------------------------------------------------------------------------
@router.get("flows", response=list[FlowOut])
@minimum_role(Role.VIEWER)
@for_flow_keys  # a key scoped to named flows lists those
def flows_list(request: HttpRequest, slug: WorkspaceSlug) -> list[dict[str, Any]]:
    flows = selectors.flows_of(context(request).workspace).annotate(latest=Max("versions__number"))
    if (scope := context(request).membership.flow_scope) is not None:
        flows = flows.filter(pk__in=scope)
    return [
        {
            "id": flow.pk,
            "name": flow.name,
            "description": flow.description,
            "created_at": flow.created_at,
            "updated_at": flow.updated_at,
            "latest_version": flow.latest,
        }
        for flow in flows[:500]
    ]


@router.post("flows", response={201: FlowDetailOut, 400: InvalidGraphOut})
@minimum_role(Role.EDITOR)
def flows_create(request: HttpRequest, slug: WorkspaceSlug, payload: FlowIn) -> Any:
    try:
        if payload.template is not None:
            flow = transfer.flow_from_starter(
                workspace=context(request).workspace,
                acting=context(request).membership,
                key=payload.template,
                name=payload.name,
            )
        else:
            flow = services.flow_create(
                workspace=context(request).workspace,
                acting=context(request).membership,
                name=payload.name,
                description=payload.description,
                graph=payload.graph,
                note=payload.note,
            )
    except GraphInvalid as exc:
        return _invalid(exc)
    return Status(201, _flow_detail(flow))


@router.get("flow-templates", response=list[StarterOut], summary="Starter templates")
@minimum_role(Role.VIEWER)
def flow_templates(request: HttpRequest, slug: WorkspaceSlug) -> list[dict[str, Any]]:
    return [
        {"key": s.key, "name": s.name, "description": s.description, "try_input": s.try_input}
        for s in STARTERS.values()
    ]


@router.post(
    "flows/import",
    response={201: ImportOut, 400: ImportRefusedOut},
    summary="Import a flow file (a version when complete, else a draft to fix)",
)
@minimum_role(Role.EDITOR)
def flows_import(request: HttpRequest, slug: WorkspaceSlug, payload: ImportIn) -> Any:
    try:
        flow, report = transfer.flow_import(
            workspace=context(request).workspace,
            acting=context(request).membership,
            document=payload.document,
            name=payload.name,
        )
    except transfer.ImportRefused as exc:
        return Status(400, {"detail": str(exc), "report": exc.report.as_dict()})
    return Status(
        201,
        {"flow": _flow_out(flow, selectors.latest_version(flow)), "report": report.as_dict()},
    )


@router.post(
    "flows/import/check",
    response={200: ImportReportOut, 400: ImportRefusedOut},
    summary="What importing a flow file would do (writes nothing)",
)
@minimum_role(Role.EDITOR)
def flows_import_check(request: HttpRequest, slug: WorkspaceSlug, payload: ImportIn) -> Any:
    try:
        report = transfer.check_import(context(request).workspace, payload.document)
    except transfer.ImportRefused as exc:
        return Status(400, {"detail": str(exc), "report": exc.report.as_dict()})
    return report.as_dict()


@router.post("router/preview", response=RouterPreviewOut, summary="Where a router sends a text")
@minimum_role(Role.EDITOR)
def router_preview(request: HttpRequest, slug: WorkspaceSlug, payload: RouterPreviewIn) -> dict:
    """The router's own rules and matcher (flows.components.logic, RE2), so the editor's
    preview can never disagree with a run."""
    try:
        params = RouterComponent.Params.model_validate(payload.params)
    except PydanticError as exc:
        problems = [
            {
                "node_id": None,
                "field": "params." + ".".join(str(p) for p in e.get("loc", ())),
                "code": "invalid_param",
                "message": param_message(dict(e)),
            }
            for e in exc.errors(include_url=False, include_input=False)
        ]
        return {"output": None, "rule": None, "problems": problems[:20]}
    probe = payload.text[:MAX_MATCH_CHARS]
    for index, rule in enumerate(params.rules):
        try:
            matched = rule_matches(rule, probe)
        except PatternError as exc:
            problem = {
                "node_id": None,
                "field": f"params.rules.{index}.pattern",
                "code": "invalid_regex",
                "message": f"Rule {index + 1}: {exc}",
            }
            return {"output": None, "rule": None, "problems": [problem]}
        if matched:
            return {"output": rule.output, "rule": index + 1, "problems": []}
    return {"output": params.default_output, "rule": None, "problems": []}


def _flow_detail(flow: Flow) -> dict[str, Any]:
    versions = list(selectors.versions_of(flow).select_related("created_by").defer("graph")[:500])
    latest = selectors.latest_version(flow)
    return {
        **_flow_out(flow, latest),
        "graph": latest.graph if latest else {"nodes": [], "edges": []},
        "versions": [_version_summary(v) for v in versions],
    }


@router.get("flows/{flow_id}", response=FlowDetailOut)
@minimum_role(Role.VIEWER)
def flows_detail(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> dict:
    return _flow_detail(access_flow(context(request).membership, flow_id))


@router.put("flows/{flow_id}", response=FlowOut)
@minimum_role(Role.EDITOR)
def flows_update(
    request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, payload: FlowUpdateIn
) -> dict:
    flow = access_flow(context(request).membership, flow_id)
    flow = services.flow_update(
        workspace=context(request).workspace,
        acting=context(request).membership,
        flow=flow,
        name=payload.name,
        description=payload.description,
    )
    return _flow_out(flow, selectors.latest_version(flow))


@router.delete("flows/{flow_id}", response={204: None})
@minimum_role(Role.EDITOR)
def flows_delete(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    services.flow_delete(
        workspace=context(request).workspace,
        acting=context(request).membership,
        flow=flow,
    )
    return Status(204, None)


@router.post(
    "flows/{flow_id}/versions", response={201: VersionOut, 200: VersionOut, 400: InvalidGraphOut}
)
@minimum_role(Role.EDITOR)
def versions_create(
    request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, payload: VersionIn
) -> Any:
    flow = access_flow(context(request).membership, flow_id)
    try:
        if payload.is_draft:
            version = services.flow_version_create(
                flow=flow,
                graph=payload.graph,
                acting=context(request).user,
                note=payload.note,
                is_draft=True,
            )
            created = True
        else:
            version, created = services.flow_version_save(
                flow=flow, graph=payload.graph, acting=context(request).user, note=payload.note
            )
    except GraphInvalid as exc:
        return _invalid(exc)
    body = {**_version_summary(version), "graph": version.graph, "unchanged": not created}
    return Status(201 if created else 200, body)


# --- the working draft --------------------------------------------------------------------------
def _draft_out(draft: FlowDraft | None) -> dict[str, Any]:
    if draft is None:
        return {"revision": 0, "graph": None}
    return {
        "revision": draft.revision,
        "graph": draft.graph,
        "base_version": draft.base_version,
        "updated_at": draft.updated_at,
        "updated_by": draft.updated_by.email if draft.updated_by else None,
    }


@router.get("flows/{flow_id}/draft", response=DraftOut, summary="The flow's working draft")
@minimum_role(Role.EDITOR)
def draft_get(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> dict:
    flow = access_flow(context(request).membership, flow_id, minimum=Role.EDITOR)
    return _draft_out(selectors.draft_of(flow))


@router.put(
    "flows/{flow_id}/draft",
    response={200: DraftOut, 409: DraftConflictOut},
    summary="Keep the editor's canvas as the draft (not validated)",
)
@minimum_role(Role.EDITOR)
def draft_put(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, payload: DraftIn) -> Any:
    flow = access_flow(context(request).membership, flow_id, minimum=Role.EDITOR)
    try:
        draft = services.draft_save(
            workspace=context(request).workspace,
            acting=context(request).membership,
            flow=flow,
            graph=payload.graph,
            base_revision=payload.base_revision,
            base_version=payload.base_version,
        )
    except services.DraftConflict as exc:
        who = exc.current.updated_by.email if exc.current and exc.current.updated_by else None
        detail = (
            f"{who or 'Another editor'} saved this draft since you loaded it."
            if exc.current is not None
            else "Another editor discarded this draft since you loaded it."
        )
        return Status(409, {"detail": detail, "draft": _draft_out(exc.current)})
    return _draft_out(draft)


@router.delete("flows/{flow_id}/draft", response={204: None}, summary="Discard the draft")
@minimum_role(Role.EDITOR)
def draft_delete(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> Any:
    flow = access_flow(context(request).membership, flow_id, minimum=Role.EDITOR)
    services.draft_discard(
        workspace=context(request).workspace, acting=context(request).membership, flow=flow
    )
    return Status(204, None)


@router.get("flows/{flow_id}/export", response=FlowFileOut, summary="The flow as a file")
@minimum_role(Role.VIEWER)
def flows_export(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> HttpResponse:
    flow = access_flow(context(request).membership, flow_id)
    document = transfer.flow_export(
        workspace=context(request).workspace, acting=context(request).membership, flow=flow
    )
    response = HttpResponse(
        json.dumps(document, ensure_ascii=False, indent=2), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{export_filename(flow.name)}"'
    return response


def export_filename(name: str) -> str:
    """An ASCII file name for a flow (the header must be plain ASCII)."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:60] or "flow"
    return f"{stem}.flowdeck.json"


@router.get("flows/{flow_id}/versions", response=list[VersionSummaryOut])
@minimum_role(Role.VIEWER)
def versions_list(request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt) -> list[dict]:
    flow = access_flow(context(request).membership, flow_id)
    return [
        _version_summary(v) for v in selectors.versions_of(flow).select_related("created_by")[:500]
    ]


@router.get("flows/{flow_id}/diff", response=VersionDiffOut)
@minimum_role(Role.VIEWER)
def versions_diff(
    request: HttpRequest,
    slug: WorkspaceSlug,
    flow_id: DbInt,
    a: DbInt | None = None,
    b: DbInt | None = None,
) -> dict:
    """Compare versions `a` and `b` (default: the latest and the one before it)."""
    flow = access_flow(context(request).membership, flow_id)
    numbers = list(selectors.versions_of(flow).values_list("number", flat=True)[:2])
    if not numbers:
        raise HttpError(404, "This flow has no versions.")
    b = numbers[0] if b is None else b
    a = (numbers[-1] if len(numbers) > 1 else b) if a is None else a
    left, right = selectors.get_version(flow, a), selectors.get_version(flow, b)
    return {"a": a, "b": b, **graph_diff(left.graph, right.graph).as_dict()}


@router.get("flows/{flow_id}/versions/{number}", response=VersionOut)
@minimum_role(Role.VIEWER)
def versions_detail(
    request: HttpRequest, slug: WorkspaceSlug, flow_id: DbInt, number: DbInt
) -> dict:
    flow = access_flow(context(request).membership, flow_id)
    version = selectors.get_version(flow, number)
    return {**_version_summary(version), "graph": version.graph}


# --- the workspace whitelist --------------------------------------------------------------------
@router.get(
    "whitelist",
    response=list[WhitelistEntryOut],
    summary="Components: platform and workspace switches",
)
@minimum_role(Role.ADMIN)
def whitelist_get(request: HttpRequest, slug: WorkspaceSlug) -> list[dict]:
    return selectors.whitelist_for(context(request).workspace)


@router.put("whitelist", response=list[WhitelistEntryOut], summary="Narrow the whitelist here")
@minimum_role(Role.ADMIN)
def whitelist_put(request: HttpRequest, slug: WorkspaceSlug, payload: WhitelistIn) -> list[dict]:
    services.workspace_policy_set(
        workspace=context(request).workspace,
        acting=context(request).membership,
        changes=payload.changes,
    )
    return selectors.whitelist_for(context(request).workspace)


# --- documents: the older door onto knowledge bases (a collection is a knowledge base) ----------
def _document_out(document: KnowledgeDocument) -> dict[str, Any]:
    return {
        "id": document.pk,
        "title": document.name,
        "collection": document.knowledge_base.name,
        "chars": document.size,
        "created_at": document.created_at,
    }


@router.get("documents", response=list[DocumentOut])
@minimum_role(Role.VIEWER)
def documents_list(request: HttpRequest, slug: WorkspaceSlug) -> list[dict]:
    documents = selectors.documents_of(context(request).workspace).select_related("knowledge_base")
    return [_document_out(d) for d in documents[:1000]]


@router.post("documents", response={201: DocumentOut})
@minimum_role(Role.EDITOR)
def documents_create(request: HttpRequest, slug: WorkspaceSlug, payload: DocumentIn) -> Any:
    """A text document in the knowledge base named `collection` (made if missing)."""
    document = services.document_create(
        workspace=context(request).workspace,
        acting=context(request).membership,
        title=payload.title,
        content=payload.content,
        collection=payload.collection,
    )
    return Status(201, _document_out(document))


@router.delete("documents/{document_id}", response={204: None})
@minimum_role(Role.EDITOR)
def documents_delete(request: HttpRequest, slug: WorkspaceSlug, document_id: DbInt) -> Any:
    document = get_scoped(KnowledgeDocument, context(request).workspace, pk=document_id)
    services.document_delete(
        workspace=context(request).workspace,
        acting=context(request).membership,
        document=document,
    )
    return Status(204, None)
