"""Flows coming in and going out: flow files (export, import) and starter templates.

A flow file is the graph the API speaks plus a versioned envelope (docs/protocol.md,
"Flow files"):

    {"format": "flowdeck.flow", "format_version": 1, "name": "...", "description": "...",
     "graph": {"nodes": [...], "edges": [...], "annotations": [...]}, "exported_at": "..."}

An import is checked before anything is written. What cannot work here is refused, each
node named: a component this platform does not have or this workspace has disabled, and a
file that is not a flow graph at all. What cannot carry across workspaces is cleared and
listed: credential and knowledge-base ids (each belongs to the workspace it was made in). A flow
whose graph is then incomplete lands as a draft, to be fixed in the editor; a complete
one lands as version 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Role, Workspace
from accounts.tenancy import require_role, scoped
from audit.services import record
from flows import services
from flows.builder import Problem, shape_problems, validate_graph
from flows.components.registry import get_component
from flows.models import Flow, FlowDraft
from flows.selectors import documents_of, enabled_keys, latest_version
from flows.starters import get_starter

FORMAT = "flowdeck.flow"
FORMAT_VERSION = 1
GRAPH_KEYS = ("nodes", "edges", "annotations")
# Problems that mean the file cannot become a flow here (anything else is fixable in the
# editor, so the flow lands as a draft).
REFUSING_CODES = {
    "invalid_graph",
    "not_json",
    "not_text",
    "too_large",
    "too_deep",
    "too_many_nodes",
    "too_many_edges",
    "invalid_node",
    "invalid_node_id",
    "duplicate_node_id",
    "unknown_field",
    "unknown_component",
    "component_disabled",
    "invalid_edge",
    "invalid_position",
    "invalid_label",
    "invalid_annotation",
}
# Params that name a collection of this workspace's documents.
COLLECTION_PARAMS = {"docs.corpus": "collection", "tool.doc_search": "collection"}
CREDENTIAL_REASON = (
    "A credential belongs to the workspace it was made in: pick one of this workspace's "
    "credentials in the node."
)
KNOWLEDGE_BASE_REASON = (
    "A knowledge base belongs to the workspace it was made in: pick one of this workspace's "
    "knowledge bases in the node."
)
# Params whose values name a row of the exporting workspace (by JSON Schema `format`).
WORKSPACE_BOUND = {"credential": CREDENTIAL_REASON, "knowledge_base": KNOWLEDGE_BASE_REASON}


@dataclass
class ImportReport:
    """What an import would do: refused (nothing is written), cleared, left to fix."""

    name: str = ""
    description: str = ""
    graph: dict | None = None
    refused: list[dict[str, Any]] = field(default_factory=list)  # {node_id, component, reason}
    cleared: list[dict[str, Any]] = field(default_factory=list)  # {node_id, param, reason}
    problems: list[dict[str, Any]] = field(default_factory=list)  # validation, left to fix
    notes: list[str] = field(default_factory=list)

    @property
    def lands_as_draft(self) -> bool:
        return bool(self.cleared or self.problems)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lands_as"] = "draft" if self.lands_as_draft else "version"
        return data


class ImportRefused(Exception):
    """The file cannot become a flow here; `report.refused` says why, item by item."""

    def __init__(self, report: ImportReport) -> None:
        reasons = "; ".join(item["reason"] for item in report.refused[:3])
        super().__init__(f"The flow file was refused: {reasons}")
        self.report = report


def _refuse(
    report: ImportReport, reason: str, node_id: str | None = None, component: Any = None
) -> None:
    report.refused.append(
        {
            "node_id": node_id,
            "component": component if isinstance(component, str) else None,
            "reason": reason,
        }
    )


# --- export -----------------------------------------------------------------------------------
def export_document(*, name: str, description: str, graph: dict) -> dict[str, Any]:
    """The file for a flow (see the module docstring)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "graph": graph,
        "exported_at": timezone.now().isoformat(),
    }


@transaction.atomic  # the audit entry is written in a transaction (audit.services.record)
def flow_export(*, workspace: Workspace, acting: Membership, flow: Flow) -> dict[str, Any]:
    """The flow's file: its latest version (or, with none yet, its draft); recorded."""
    require_role(acting, Role.VIEWER)
    version = latest_version(flow)
    source: dict[str, int | None]  # where the graph came from, for the audit entry
    if version is not None:
        graph, source = version.graph, {"version": version.number}
    else:
        draft = scoped(FlowDraft, workspace).filter(flow=flow).first()
        graph = draft.graph if draft is not None else dict(services.EMPTY_GRAPH)
        source = {"draft": draft.revision if draft is not None else None}
    record(
        action="flow.export",
        workspace=workspace,
        actor=acting.user,
        target=f"flow:{flow.pk}",
        after={**source, "checksum": services.graph_checksum(graph)},
    )
    return export_document(name=flow.name, description=flow.description, graph=graph)


# --- import -----------------------------------------------------------------------------------
def check_import(workspace: Workspace, document: Any) -> ImportReport:
    """What importing `document` into `workspace` would do (writes nothing); ImportRefused
    when it cannot be imported at all."""
    report = ImportReport()
    if not isinstance(document, dict):
        _refuse(report, "A flow file is a JSON object.")
        raise ImportRefused(report)
    if document.get("format") != FORMAT:
        _refuse(report, f"This is not a Flowdeck flow file (its `format` is not {FORMAT}).")
        raise ImportRefused(report)
    version = document.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        _refuse(report, "The file's `format_version` must be a whole number (1).")
        raise ImportRefused(report)
    if version > FORMAT_VERSION:
        _refuse(
            report,
            f"The file was made by a newer Flowdeck (format version {version}); this one "
            f"reads version {FORMAT_VERSION}.",
        )
        raise ImportRefused(report)
    name = document.get("name", "")
    description = document.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        _refuse(report, "The file's `name` and `description` must be text.")
        raise ImportRefused(report)
    report.name = name.strip()[: services.NAME_MAX] or "Imported flow"
    if len(name.strip()) > services.NAME_MAX:
        report.notes.append(f"The name was cut to {services.NAME_MAX} characters.")
    report.description = description[:5000]
    if len(description) > 5000:
        report.notes.append("The description was cut to 5000 characters.")

    raw = document.get("graph")
    if not isinstance(raw, dict):
        _refuse(report, "The file has no flow graph (`graph` must be an object).")
        raise ImportRefused(report)
    shape = shape_problems(raw)
    if shape:
        _refuse(report, shape[0].message)
        raise ImportRefused(report)
    ignored = sorted(str(key)[:40] for key in raw if key not in GRAPH_KEYS)
    if ignored:
        report.notes.append(f"Ignored what a flow graph does not have: {', '.join(ignored)}.")
    graph: dict[str, Any] = {key: raw[key] for key in GRAPH_KEYS if key in raw}
    graph.setdefault("nodes", [])
    graph.setdefault("edges", [])

    _check_components(report, workspace, graph)
    named = {item["node_id"] for item in report.refused}
    _clear_credentials(report, graph)
    _drop_pins(report, graph)
    for problem in validate_graph(graph, workspace):
        if problem.code in {"unknown_component", "component_disabled"} and (
            problem.node_id in named
        ):
            continue  # already said, with the component's name
        if problem.code in REFUSING_CODES:
            _refuse(report, _node_reason(problem), problem.node_id)
        else:
            report.problems.append(problem.as_dict())
    if report.refused:
        raise ImportRefused(report)
    _note_missing_collections(report, workspace, graph)
    report.graph = graph
    return report


def _check_components(report: ImportReport, workspace: Workspace, graph: dict) -> None:
    """Each node whose component cannot be used here, named."""
    nodes = graph["nodes"]
    if not isinstance(nodes, list):
        return  # reported by validation
    enabled = enabled_keys(workspace)
    for node in nodes:
        if not isinstance(node, dict):
            continue
        node_id = node.get("id") if isinstance(node.get("id"), str) else None
        key = node.get("component")
        if not isinstance(key, str) or node_id is None:
            continue  # not a node at all: validation says what is wrong with it
        shown = f"“{node_id}”" if node_id else "A node"
        if get_component(key) is None:
            _refuse(
                report,
                f"Node {shown} uses the component {str(key)[:60]!r}, which this Flowdeck "
                "does not have.",
                node_id,
                key,
            )
        elif key not in enabled:
            _refuse(
                report,
                f"Node {shown} uses {key}, which is disabled in this workspace (ask an admin "
                "to enable it, or replace the node before exporting).",
                node_id,
                key,
            )


def _clear_credentials(report: ImportReport, graph: dict) -> None:
    for node in graph["nodes"] if isinstance(graph["nodes"], list) else []:
        component = get_component(node.get("component")) if isinstance(node, dict) else None
        params = node.get("params") if component is not None else None
        if component is None or not isinstance(params, dict):
            continue
        properties = component.params_schema().get("properties", {})
        for param, schema in properties.items():
            reason = WORKSPACE_BOUND.get(schema.get("format"))
            if reason is not None and params.get(param) is not None:
                params = {k: v for k, v in params.items() if k != param}
                report.cleared.append({"node_id": node.get("id"), "param": param, "reason": reason})
        node["params"] = params


def _drop_pins(report: ImportReport, graph: dict) -> None:
    """A pinned output is a run of the workspace that recorded it (flows.pinning): the
    imported node runs again, unpinned."""
    unpinned = []
    for node in graph["nodes"] if isinstance(graph["nodes"], list) else []:
        if isinstance(node, dict) and "pinned" in node:
            del node["pinned"]
            unpinned.append(str(node.get("id"))[:64])
    if unpinned:
        report.notes.append(
            f"Unpinned {', '.join(unpinned[:10])}: a pinned output stays with the runs of the "
            "workspace that recorded it."
        )


def _node_reason(problem: Problem) -> str:
    where = f"Node “{problem.node_id}”: " if problem.node_id else ""
    return f"{where}{problem.message}"


def _note_missing_collections(report: ImportReport, workspace: Workspace, graph: dict) -> None:
    wanted: set[str] = set()
    for node in graph["nodes"]:
        param = COLLECTION_PARAMS.get(node.get("component"))
        value = (node.get("params") or {}).get(param, "default") if param else None
        if isinstance(value, str):
            wanted.add(value)
    if not wanted:
        return
    documents = documents_of(workspace).filter(knowledge_base__name__in=wanted)
    present = set(documents.values_list("knowledge_base__name", flat=True))
    for collection in sorted(wanted - present):
        report.notes.append(
            f"The document collection “{collection}” is empty in this workspace: add documents "
            "to it before running."
        )


@transaction.atomic
def flow_import(
    *, workspace: Workspace, acting: Membership, document: Any, name: str | None = None
) -> tuple[Flow, ImportReport]:
    """A new flow from a flow file: version 1 when complete, else a draft to fix (with
    what was cleared and what is left listed). ImportRefused changes nothing."""
    require_role(acting, Role.EDITOR)
    report = check_import(workspace, document)
    flow = services.flow_create(
        workspace=workspace,
        acting=acting,
        name=(name or "").strip() or report.name,
        description=report.description,
        origin="import",
    )
    assert report.graph is not None  # noqa: S101 (check_import returns a graph)
    if report.lands_as_draft:
        services.draft_save(
            workspace=workspace, acting=acting, flow=flow, graph=report.graph, base_revision=0
        )
    else:
        services.flow_version_create(
            flow=flow, graph=report.graph, acting=acting.user, note="imported from a file"
        )
    return flow, report


# --- starter templates ------------------------------------------------------------------------
@transaction.atomic
def flow_from_starter(
    *, workspace: Workspace, acting: Membership, key: str, name: str = ""
) -> Flow:
    """A new flow from the template `key` (flows.starters), its sample documents added to
    the workspace when their collection is still empty."""
    require_role(acting, Role.EDITOR)
    starter = get_starter(key)
    if starter is None:
        raise ValidationError({"template": ["No such template."]})
    for collection, documents in starter.documents:
        if documents_of(workspace, collection).exists():
            continue
        for title, content in documents:
            services.document_create(
                workspace=workspace,
                acting=acting,
                title=title,
                content=content,
                collection=collection,
            )
    return services.flow_create(
        workspace=workspace,
        acting=acting,
        name=name.strip() or starter.name,
        description=starter.description,
        graph=starter.graph(),
        note=f"from the “{starter.name}” template",
        origin=f"template:{starter.key}",
    )
