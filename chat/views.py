"""A flow's Embed page: its embeds on websites (chat bubble or iframe), each with the
snippet to paste, its allowed origins and limits; editors create, change, switch off and
delete them (chat.embeds)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from accounts.models import Role
from accounts.tenancy import WorkspaceMixin, get_scoped
from chat import embeds
from chat.embed_views import own_origin
from chat.models import Embed
from chat.selectors import publication_of
from flows.access import access_flow


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def settings_from(form: Any) -> embeds.EmbedSettings:
    """An embed's settings from the page's form (validated by the service)."""
    return embeds.EmbedSettings(
        name=form.get("name", ""),
        allowed_origins=form.get("allowed_origins", ""),
        title=form.get("title", ""),
        welcome_message=form.get("welcome_message", ""),
        accent_color=form.get("accent_color", "#2563eb"),
        show_sources=form.get("show_sources") == "on",
        visitor_runs_per_minute=_int(form.get("visitor_runs_per_minute"), 0),
        runs_per_minute=_int(form.get("runs_per_minute"), 0),
        enabled=form.get("enabled", "on") == "on",
    )


class FlowEmbedsView(WorkspaceMixin, View):
    role_map = {"GET": Role.VIEWER, "POST": Role.EDITOR}

    def get(self, request: HttpRequest, slug: str, flow_id: int) -> HttpResponse:
        flow = access_flow(self.membership, flow_id)
        return render(
            request,
            "chat/embeds.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "flow": flow,
                "publication": publication_of(flow),
                "embeds": embeds.embeds_of(self.workspace, flow),
                "can_manage": self.membership.has_role(Role.EDITOR),
                "origin": own_origin(request),
            },
        )

    def post(self, request: HttpRequest, slug: str, flow_id: int) -> HttpResponse:
        flow = access_flow(self.membership, flow_id, minimum=Role.EDITOR)
        action, form = request.POST.get("action"), request.POST
        try:
            if action == "create":
                embeds.embed_create(
                    workspace=self.workspace,
                    acting=self.membership,
                    flow=flow,
                    settings=settings_from(form),
                )
                messages.success(request, "Embed created: paste its snippet into your website.")
            elif action in ("update", "delete"):
                embed = get_scoped(Embed, self.workspace, pk=_int(form.get("embed"), 0), flow=flow)
                if action == "update":
                    embeds.embed_update(
                        workspace=self.workspace,
                        acting=self.membership,
                        embed=embed,
                        settings=settings_from(form),
                    )
                    messages.success(request, f"Saved “{embed.name}”.")
                else:
                    embeds.embed_delete(
                        workspace=self.workspace, acting=self.membership, embed=embed
                    )
                    messages.success(request, f"Deleted “{embed.name}”: its snippet stops working.")
            else:
                messages.error(request, "Unknown action.")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("flow_embeds", slug=self.workspace.slug, flow_id=flow.pk)
