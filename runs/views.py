"""Pages for runs: the list (per workspace and per flow) and one run, watched live or replayed.

The run page hosts the same island as the editor in its watch mode: a read-only canvas of
the exact graph that ran and the run panel, which follows the run over the WebSocket from
seq 0, so a running run is seen live from its start and a finished one in full.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View

from accounts.models import Role
from accounts.tenancy import WorkspaceMixin
from flows.access import access_flow
from flows.views import island_config
from runs import approvals, selectors
from runs.access import access_run
from runs.timeline import run_summary

RUNS_PAGE = 100


class RunListView(WorkspaceMixin, View):
    """The newest runs of the workspace, or of one flow."""

    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str, flow_id: int | None = None) -> HttpResponse:
        flow = access_flow(self.membership, flow_id) if flow_id is not None else None
        runs = selectors.runs_for_workspace(
            self.workspace, flow_id=flow.pk if flow is not None else None
        )
        return render(
            request,
            "runs/run_list.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "flow": flow,
                "runs": list(runs[:RUNS_PAGE]),
                "page_size": RUNS_PAGE,
            },
        )


class RunDetailView(WorkspaceMixin, View):
    """One run in the run view: live while it runs, complete once it finished."""

    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str, run_id: str) -> HttpResponse:
        run = access_run(self.membership, run_id)
        config: dict[str, Any] = island_config(
            request,
            self.workspace,
            can_edit=False,
            can_run=self.membership.has_role(Role.EDITOR),  # re-run; viewers watch and replay
            mode="run",
            runId=str(run.pk),
            flowId=run.flow_id,
            flowName=run.flow.name,
            version=run.flow_version.number,
            graph=run.flow_version.graph,
        )
        return render(
            request,
            "runs/run_detail.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "run": run,
                "config": config,
                "previous": selectors.previous_run(run),
                **(run_summary(run) if run.is_finished else {}),
            },
        )


class ApprovalsView(WorkspaceMixin, View):
    """The workspace's runs waiting for a person: what each asks, of which flow, since when,
    and who may decide (the decision is taken on the run's page)."""

    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        waiting = approvals.pending_approvals(self.workspace)[:200]
        return render(
            request,
            "runs/approvals.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "approvals": [(a, approvals.can_decide(self.membership, a)) for a in waiting],
            },
        )
