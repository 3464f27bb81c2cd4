"""Compare two runs of a workspace side by side, node by node — typically a re-run and its
original (`/w/<slug>/runs/<run_id>/compare/<other_id>/`, viewers and up; the admin has the
same page for staff). Computed from the logs by `selectors.compare_runs`."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from accounts.models import Role, Workspace
from accounts.tenancy import WorkspaceMixin
from runs.access import access_run
from runs.models import Run
from runs.selectors import compare_runs

OUTPUT_PREVIEW = 5000


def _shown(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    return text if len(text) <= OUTPUT_PREVIEW else text[:OUTPUT_PREVIEW] + "\n…"


def compare_context(workspace: Workspace, run_a: Run, run_b: Run) -> dict[str, Any]:
    """What both comparison pages show: the runs, and one row per node."""
    rows = [
        {
            "node_id": c.node_id,
            "component": c.component,
            "same": c.same_output,
            "sides": [
                {
                    "status": r.status,
                    "output": _shown(r.output),
                    "duration_ms": r.duration_ms,
                    "errors": r.errors,
                    "notes": r.notes,
                }
                for r in (c.a, c.b)
            ],
        }
        for c in compare_runs(workspace, run_a, run_b)
    ]
    return {"run_a": run_a, "run_b": run_b, "runs": [run_a, run_b], "rows": rows}


class RunCompareView(WorkspaceMixin, View):
    """Both runs must belong to the workspace in the URL; anything else is a 404."""

    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str, run_id: str, other_id: str) -> HttpResponse:
        run_a = access_run(self.membership, run_id)
        run_b = access_run(self.membership, other_id)
        context = {
            "workspace": self.workspace,
            "membership": self.membership,
            **compare_context(self.workspace, run_a, run_b),
        }
        return render(request, "runs/run_compare.html", context)


class RunComparePickView(WorkspaceMixin, View):
    """The run list's "Compare selected": exactly two runs picked, then their comparison
    (oldest as A). Each must be the workspace's; anything else is a 404."""

    role_map = {"GET": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        picked = request.GET.getlist("run")
        back = request.GET.get("back") or ""
        if len(picked) != 2:
            messages.error(request, "Pick exactly two runs to compare.")
            return redirect(back if back.startswith(f"/w/{slug}/") else f"/w/{slug}/runs/")
        runs = sorted((access_run(self.membership, pk) for pk in picked), key=lambda r: r.created_at)
        return redirect("run_compare", slug=slug, run_id=runs[0].pk, other_id=runs[1].pk)
