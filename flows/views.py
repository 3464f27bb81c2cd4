"""Pages for flows: the list (create, rename, duplicate, delete, search) and the editor.

The editor is a React island (frontend/, built into static/build/); this module renders
the page around it and hands it a JSON config: the workspace, the flow, its latest graph,
its version history and what the member may do. All data after that goes through the API.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View

from accounts.models import Role, Workspace
from accounts.tenancy import WorkspaceMixin
from flows import selectors, services, transfer
from flows.access import access_credential, access_flow
from flows.builder import GraphInvalid
from flows.diff import graph_diff
from flows.models import Flow, FlowDraft, FlowVersion
from flows.providers import PROVIDERS
from flows.starters import STARTERS
from runs import selectors as run_selectors

SEARCH_MAX = 100


CHAT_INPUT = "io.chat_input"  # the node a chat message goes to


def _with_last_runs(workspace: Workspace, flows: QuerySet[Flow]) -> list[Flow]:
    """The flows, each with `last_run` (a runs.selectors.RunSummary, or None)."""
    listed = list(flows)
    summaries = run_selectors.last_runs(workspace, [flow.pk for flow in listed])
    for flow in listed:
        flow.last_run = summaries.get(flow.pk)  # type: ignore[attr-defined]  # display-only, for the template; not a model field
    return listed


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        return -1  # never a primary key: the scoped lookup answers 404


class FlowListView(WorkspaceMixin, View):
    """The workspace's flows; editors create, rename, duplicate and delete them."""

    role_map = {"GET": Role.VIEWER, "POST": Role.EDITOR}

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        search = request.GET.get("q", "").strip()[:SEARCH_MAX]
        return render(
            request,
            "flows/flow_list.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "flows": _with_last_runs(
                    self.workspace, selectors.flows_for_list(self.workspace, search=search)
                ),
                "search": search,
                "can_edit": self.membership.has_role(Role.EDITOR),
                "starters": list(STARTERS.values()),
                "import_report": None,
            },
        )

    def _import(self, request: HttpRequest) -> HttpResponse:
        """A flow file from the form: to the editor when imported (what was cleared is
        said there), or this page again with every reason it was refused."""
        document, error = _read_flow_file(request)
        report: transfer.ImportReport | None = None
        if error is None:
            try:
                flow, report = transfer.flow_import(
                    workspace=self.workspace, acting=self.membership, document=document
                )
            except transfer.ImportRefused as exc:
                report = exc.report
            else:
                for line in _import_summary(report):
                    messages.info(request, line)
                return redirect("flow_editor", slug=self.workspace.slug, flow_id=flow.pk)
        return render(
            request,
            "flows/flow_list.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "flows": _with_last_runs(self.workspace, selectors.flows_for_list(self.workspace)),
                "search": "",
                "can_edit": True,
                "starters": list(STARTERS.values()),
                "import_error": error,
                "import_report": report,
            },
            status=400,
        )

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        action = request.POST.get("action", "create")
        name = request.POST.get("name", "").strip()
        try:
            if action == "create" and request.POST.get("template"):
                flow = transfer.flow_from_starter(
                    workspace=self.workspace,
                    acting=self.membership,
                    key=request.POST["template"],
                    name=name,
                )
                return redirect("flow_editor", slug=self.workspace.slug, flow_id=flow.pk)
            if action == "create":
                flow = services.flow_create(
                    workspace=self.workspace, acting=self.membership, name=name or "Untitled flow"
                )
                return redirect("flow_editor", slug=self.workspace.slug, flow_id=flow.pk)
            if action == "import":
                return self._import(request)
            flow = access_flow(self.membership, _int(request.POST.get("flow")))
            if action == "rename":
                services.flow_rename(
                    workspace=self.workspace, acting=self.membership, flow=flow, name=name
                )
                messages.success(request, f"Renamed to “{name}”.")
            elif action == "duplicate":
                copy = services.flow_duplicate(
                    workspace=self.workspace, acting=self.membership, flow=flow
                )
                messages.success(request, f"Duplicated as “{copy.name}”.")
            elif action == "delete":
                services.flow_delete(workspace=self.workspace, acting=self.membership, flow=flow)
                messages.success(request, f"Deleted “{flow.name}”.")
            else:
                messages.error(request, "Unknown action.")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("flow_list", slug=self.workspace.slug)


def _read_flow_file(request: HttpRequest) -> tuple[Any, str | None]:
    """(the uploaded flow file's JSON, None) or (None, why it could not be read)."""
    upload = request.FILES.get("file")
    if upload is None:
        return None, "Choose a flow file (.json) to import."
    limit = settings.FLOWDECK["GRAPH_MAX_BYTES"] + 64 * 1024
    if upload.size is not None and upload.size > limit:
        return None, f"The file is larger than a flow may be ({limit // 1024} KiB)."
    try:
        return json.loads(upload.read(limit + 1).decode("utf-8")), None
    except (UnicodeDecodeError, ValueError):
        return None, "The file is not JSON: export a flow from Flowdeck and import that file."


def _import_summary(report: transfer.ImportReport) -> list[str]:
    lines = [
        "Imported as a draft: fix what is listed, then save a version."
        if report.lands_as_draft
        else "Imported as version 1."
    ]
    lines += [
        f"Cleared {c['param']} of node “{c['node_id']}”: {c['reason']}" for c in report.cleared
    ]
    lines += report.notes
    return lines


def version_list(flow: Flow) -> list[dict[str, Any]]:
    """The version history as the island reads it, newest first."""
    versions = selectors.versions_of(flow).select_related("created_by")
    return [
        {
            "number": v.number,
            "note": v.note,
            "created_at": v.created_at.isoformat(),
            "created_by": v.created_by.email if v.created_by else None,
            "is_draft": v.is_draft,
        }
        for v in versions[:200]
    ]


def island_config(
    request: HttpRequest, workspace: Workspace, *, can_edit: bool, can_run: bool, **extra: Any
) -> dict[str, Any]:
    """What every page hosting the island passes it (see frontend/src/lib/config.ts)."""
    slug = workspace.slug
    return {
        "mode": "editor",
        "slug": slug,
        "apiBase": f"/api/w/{slug}/",
        "wsPath": f"/ws/w/{slug}/exec",
        "flowId": None,
        "flowName": "",
        "version": None,
        "runId": None,
        "graph": {"nodes": [], "edges": []},
        "versions": [],
        "canEdit": can_edit,
        "canRun": can_run,
        "flowsUrl": reverse("flow_list", args=[slug]),
        "runsUrl": reverse("run_list", args=[slug]),
        "runUrlTemplate": reverse("run_detail", args=[slug, "RUN_ID"]),
        **extra,
    }


class FlowEditorView(WorkspaceMixin, View):
    """The canvas for one flow (its latest version, or `?version=<n>`). Viewers get it
    read-only; editors edit, save and run."""

    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str, flow_id: int) -> HttpResponse:
        flow = access_flow(self.membership, flow_id)
        wanted = request.GET.get("version")
        latest = (
            selectors.get_version(flow, _int(wanted)) if wanted else selectors.latest_version(flow)
        )
        can_edit = self.membership.has_role(Role.EDITOR)
        draft = selectors.draft_of(flow) if can_edit else None
        config = island_config(
            request,
            self.workspace,
            can_edit=can_edit,
            can_run=can_edit,
            flowId=flow.pk,
            flowName=flow.name,
            flowDescription=flow.description,
            version=latest.number if latest else None,
            graph=latest.graph if latest else {"nodes": [], "edges": []},
            versions=version_list(flow),
            runsUrl=reverse("flow_runs", args=[slug, flow.pk]),
            # The draft is the canvas to restore when it is newer than the version shown
            # (and differs from it); its revision is what the next autosave builds on.
            draft=_draft_config(draft) if _draft_is_newer(draft, latest, wanted) else None,
            draftRevision=draft.revision if draft is not None else 0,
            credentialsUrl=reverse("connections", args=[slug]),
            knowledgeUrl=reverse("knowledge_list", args=[slug]),
            chatUrl=reverse("flow_chat", args=[slug, flow.pk]),
        )
        return render(
            request,
            "flows/editor.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "flow": flow,
                "config": config,
            },
        )


class FlowChatView(WorkspaceMixin, View):
    """The chat playground as a page: the flow's conversations and one of them, each turn
    a run of the newest saved version. Viewers read the conversations; editors chat."""

    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str, flow_id: int) -> HttpResponse:
        flow = access_flow(self.membership, flow_id)
        latest = selectors.latest_version(flow)
        nodes = latest.graph.get("nodes", []) if latest and isinstance(latest.graph, dict) else []
        can_edit = self.membership.has_role(Role.EDITOR)
        config = island_config(
            request,
            self.workspace,
            can_edit=can_edit,
            can_run=can_edit and latest is not None,
            mode="chat",
            flowId=flow.pk,
            flowName=flow.name,
            version=latest.number if latest else None,
            chatInputs=[
                str(n.get("id"))
                for n in nodes
                if isinstance(n, dict) and n.get("component") == CHAT_INPUT
            ],
            runsUrl=reverse("flow_runs", args=[slug, flow.pk]),
        )
        return render(
            request,
            "flows/chat.html",
            {"workspace": self.workspace, "flow": flow, "latest": latest, "config": config},
        )


def _draft_is_newer(
    draft: FlowDraft | None, latest: FlowVersion | None, wanted: str | None
) -> bool:
    if draft is None or wanted:  # an explicitly asked-for version is shown as it is
        return False
    if latest is None:
        return True
    return draft.updated_at > latest.created_at and (
        services.graph_checksum(draft.graph) != latest.checksum
    )


def _draft_config(draft: FlowDraft | None) -> dict[str, Any] | None:
    if draft is None:
        return None
    return {
        "graph": draft.graph,
        "revision": draft.revision,
        "baseVersion": draft.base_version,
        "updatedAt": draft.updated_at.isoformat(),
        "updatedBy": draft.updated_by.email if draft.updated_by else None,
    }


class FlowVersionsView(WorkspaceMixin, View):
    """A flow's version history; `?a=<n>&b=<n>` compares two versions. Editors publish a
    version (or an older one: a rollback) and unpublish the flow here (chat.services)."""

    role_map = {"GET": Role.VIEWER, "POST": Role.EDITOR}

    def get(self, request: HttpRequest, slug: str, flow_id: int) -> HttpResponse:
        from chat.selectors import publication_of

        flow = access_flow(self.membership, flow_id)
        versions = list(selectors.versions_of(flow).select_related("created_by")[:500])
        diff = left = right = None
        if request.GET.get("a") and request.GET.get("b"):
            left = selectors.get_version(flow, _int(request.GET["a"]))
            right = selectors.get_version(flow, _int(request.GET["b"]))
            diff = graph_diff(left.graph, right.graph)
        return render(
            request,
            "flows/versions.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "flow": flow,
                "versions": versions,
                "publication": publication_of(flow),
                "can_publish": self.membership.has_role(Role.EDITOR),
                "diff": diff,
                "left": left,
                "right": right,
            },
        )

    def post(self, request: HttpRequest, slug: str, flow_id: int) -> HttpResponse:
        from chat import services as chat_services

        flow = access_flow(self.membership, flow_id, minimum=Role.EDITOR)
        action = request.POST.get("action")
        try:
            if action == "publish":
                from chat.selectors import publication_of

                number = _int(request.POST.get("version"))
                before = publication_of(flow)
                publication = chat_services.flow_publish(
                    workspace=self.workspace,
                    acting=self.membership,
                    flow=flow,
                    version_number=number,
                )
                done = (
                    "Rolled back to" if before and before.version.number > number else "Published"
                )
                messages.success(
                    request,
                    f"{done} v{number}: callers now run it (model “{publication.model_name}”).",
                )
            elif action == "unpublish":
                chat_services.flow_unpublish(
                    workspace=self.workspace, acting=self.membership, flow=flow
                )
                messages.success(request, "Unpublished: callers must name a version now.")
            else:
                messages.error(request, "Unknown action.")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        except GraphInvalid as exc:
            problems = "; ".join(p.message for p in exc.problems[:5])
            messages.error(request, f"This version's graph is not valid now: {problems}")
        return redirect("flow_versions", slug=self.workspace.slug, flow_id=flow.pk)


class ConnectionsView(WorkspaceMixin, View):
    """Settings: the workspace's provider connections (credentials). Every member sees which
    exist (a node picks one by name); admins create, edit, rotate, test and delete them.
    Keys are write-only: the page never holds one."""

    role_map = {"GET": Role.VIEWER, "POST": Role.ADMIN}

    def get(self, request: HttpRequest, slug: str, status: int = 200) -> HttpResponse:
        return render(
            request,
            "flows/connections.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "credentials": selectors.credentials_of(self.workspace).order_by("name"),
                "providers": PROVIDERS.values(),
                "can_manage": self.membership.has_role(Role.ADMIN),
            },
            status=status,
        )

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        action, form = request.POST.get("action"), request.POST
        workspace, acting = self.workspace, self.membership
        try:
            if action == "create":
                created = services.credential_create(
                    workspace=workspace,
                    acting=acting,
                    name=form.get("name", ""),
                    provider=form.get("provider", ""),
                    base_url=form.get("base_url", ""),
                    api_key=form.get("api_key", ""),
                )
                messages.success(request, f"Connection “{created.name}” created.")
            elif action == "edit":
                credential = access_credential(self.membership, _int(form.get("credential")))
                services.credential_update(
                    workspace=workspace,
                    acting=acting,
                    credential=credential,
                    name=form.get("name", ""),
                    base_url=form.get("base_url", ""),
                    # an empty key field keeps the stored key; a new one replaces it
                    api_key=form.get("api_key") or None,
                )
                messages.success(request, f"Connection “{credential.name}” saved.")
            elif action == "test":
                credential = access_credential(self.membership, _int(form.get("credential")))
                check = services.credential_test(
                    workspace=workspace, acting=acting, credential=credential
                )
                report = messages.success if check.ok else messages.error
                report(request, f"{credential.name}: {check.message}")
            elif action == "delete":
                credential = access_credential(self.membership, _int(form.get("credential")))
                services.credential_delete(
                    workspace=workspace, acting=acting, credential=credential
                )
                messages.success(request, f"Connection “{credential.name}” deleted.")
            else:
                messages.error(request, "Unknown action.")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("connections", slug=self.workspace.slug)
