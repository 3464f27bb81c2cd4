"""Pages for flows: the list (create, rename, duplicate, delete, search) and the editor.

The editor is a React island (frontend/, built into static/build/); this module renders
the page around it and hands it a JSON config: the workspace, the flow, its latest graph,
its version history and what the member may do. All data after that goes through the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View

from accounts.models import Role, Workspace
from accounts.tenancy import WorkspaceMixin
from flows import selectors, services
from flows.access import access_credential, access_flow
from flows.diff import graph_diff
from flows.models import Flow
from flows.providers import PROVIDERS
from runs import selectors as run_selectors

SEARCH_MAX = 100


def _with_last_runs(workspace: Workspace, flows: QuerySet[Flow]) -> list[Flow]:
    """The flows, each with `last_run` (a runs.selectors.RunSummary, or None)."""
    listed = list(flows)
    summaries = run_selectors.last_runs(workspace, [flow.pk for flow in listed])
    for flow in listed:
        flow.last_run = summaries.get(flow.pk)  # type: ignore[attr-defined]  # for the template
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
            },
        )

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        action = request.POST.get("action", "create")
        name = request.POST.get("name", "").strip()
        try:
            if action == "create":
                flow = services.flow_create(
                    workspace=self.workspace, acting=self.membership, name=name or "Untitled flow"
                )
                return redirect("flow_editor", slug=self.workspace.slug, flow_id=flow.pk)
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
        config = island_config(
            request,
            self.workspace,
            can_edit=can_edit,
            can_run=can_edit,
            flowId=flow.pk,
            flowName=flow.name,
            version=latest.number if latest else None,
            graph=latest.graph if latest else {"nodes": [], "edges": []},
            versions=version_list(flow),
            runsUrl=reverse("flow_runs", args=[slug, flow.pk]),
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


class FlowVersionsView(WorkspaceMixin, View):
    """A flow's version history; `?a=<n>&b=<n>` compares two versions."""

    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str, flow_id: int) -> HttpResponse:
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
                "diff": diff,
                "left": left,
                "right": right,
            },
        )


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
        common = {"workspace": self.workspace, "acting": self.membership}
        try:
            if action == "create":
                created = services.credential_create(
                    **common,
                    name=form.get("name", ""),
                    provider=form.get("provider", ""),
                    base_url=form.get("base_url", ""),
                    api_key=form.get("api_key", ""),
                )
                messages.success(request, f"Connection “{created.name}” created.")
            elif action == "edit":
                credential = access_credential(self.membership, _int(form.get("credential")))
                services.credential_update(
                    **common,
                    credential=credential,
                    name=form.get("name", ""),
                    base_url=form.get("base_url", ""),
                    # an empty key field keeps the stored key; a new one replaces it
                    api_key=form.get("api_key") or None,
                )
                messages.success(request, f"Connection “{credential.name}” saved.")
            elif action == "test":
                credential = access_credential(self.membership, _int(form.get("credential")))
                check = services.credential_test(**common, credential=credential)
                report = messages.success if check.ok else messages.error
                report(request, f"{credential.name}: {check.message}")
            elif action == "delete":
                credential = access_credential(self.membership, _int(form.get("credential")))
                services.credential_delete(**common, credential=credential)
                messages.success(request, f"Connection “{credential.name}” deleted.")
            else:
                messages.error(request, "Unknown action.")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("connections", slug=self.workspace.slug)
