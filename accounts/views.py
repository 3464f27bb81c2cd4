"""Pages for accounts: home, workspace switcher, members, invitations and API tokens."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView

from accounts import selectors, services
from accounts.models import ApiToken, Role, User
from accounts.tenancy import WorkspaceMixin, signed_in_user


def _errors(exc: ValidationError) -> str:
    return " ".join(exc.messages)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send the user to their first workspace, or show that they have none yet."""
    memberships = selectors.memberships_of(signed_in_user(request))
    if len(memberships) == 1:
        return redirect("workspace_home", slug=memberships[0].workspace.slug)
    return render(request, "accounts/home.html", {"memberships": memberships})


class WorkspaceHomeView(WorkspaceMixin, TemplateView):
    template_name = "accounts/workspace_home.html"
    role_map = {"GET": Role.VIEWER}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["member_count"] = selectors.members_of(self.workspace).count()
        return context


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.EDITOR)


class MembersView(WorkspaceMixin, View):
    """Members and pending invitations; admins invite, change roles and remove members."""

    role_map = {"GET": Role.VIEWER, "POST": Role.ADMIN}

    def render_page(
        self, request: HttpRequest, form: InviteForm, status: int = 200
    ) -> HttpResponse:
        return render(
            request,
            "accounts/members.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "members": selectors.members_of(self.workspace),
                "invitations": selectors.pending_invitations(self.workspace),
                "roles": Role.choices,
                "form": form,
                "can_manage": self.membership.has_role(Role.ADMIN),
            },
            status=status,
        )

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        return self.render_page(request, InviteForm())

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        action = request.POST.get("action")
        try:
            if action == "invite":
                form = InviteForm(request.POST)
                if not form.is_valid():
                    return self.render_page(request, form, status=400)
                issued = services.invitation_create(
                    workspace=self.workspace,
                    acting=self.membership,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    base_url=request.build_absolute_uri("/").rstrip("/"),
                )
                link = request.build_absolute_uri(issued.path())
                messages.success(request, "Invitation created. Share this link:")
                messages.success(request, link, extra_tags="copyable")
            elif action == "role":
                services.membership_change_role(
                    workspace=self.workspace,
                    acting=self.membership,
                    membership_id=_int(request.POST.get("membership")),
                    role=request.POST.get("role", ""),
                )
                messages.success(request, "Role changed.")
            elif action == "remove":
                services.membership_remove(
                    workspace=self.workspace,
                    acting=self.membership,
                    membership_id=_int(request.POST.get("membership")),
                )
                messages.success(request, "Member removed.")
            elif action == "revoke_invitation":
                services.invitation_revoke(
                    workspace=self.workspace,
                    acting=self.membership,
                    invitation_id=_int(request.POST.get("invitation")),
                )
                messages.success(request, "Invitation revoked.")
            else:
                messages.error(request, "Unknown action.")
        except ValidationError as exc:
            messages.error(request, _errors(exc))
        return redirect("members", slug=self.workspace.slug)


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        return -1  # never a primary key: the scoped lookup answers 404


class TokensView(WorkspaceMixin, View):
    """The member's own API tokens for this workspace; a new secret is shown once. A token
    may be scoped to named flows, expire, and have a rate limit."""

    role_map = {"GET": Role.VIEWER, "POST": Role.VIEWER}

    def get(self, request: HttpRequest, slug: str, secret: str = "") -> HttpResponse:
        names = selectors.flow_names(self.workspace)
        tokens = list(
            selectors.tokens_of(self.workspace, signed_in_user(request)).select_related("budget")
        )
        scopes = {
            t.pk: [names.get(i, f"deleted flow {i}") for i in sorted(t.flow_scope)]
            if t.flow_scope is not None
            else None
            for t in tokens
        }
        return render(
            request,
            "accounts/tokens.html",
            {
                "workspace": self.workspace,
                "membership": self.membership,
                "tokens": [(t, scopes[t.pk], _budget(t)) for t in tokens],
                "flows": names.items(),
                "secret": secret,
                # Admins and owners set any key's own budget (the usage app's KeyBudgetView).
                "key_budgets": [(t, _budget(t)) for t in selectors.active_tokens(self.workspace)]
                if self.membership.has_role(Role.ADMIN)
                else None,
            },
        )

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        if request.POST.get("action") == "revoke":
            services.api_token_revoke(
                workspace=self.workspace,
                acting=self.membership,
                token_id=_int(request.POST.get("token")),
            )
            messages.success(request, "Token revoked.")
            return redirect("tokens", slug=self.workspace.slug)
        try:
            issued = services.api_token_create(
                workspace=self.workspace,
                user=signed_in_user(request),
                name=request.POST.get("name", ""),
                **_token_options(request),
            )
        except ValidationError as exc:
            messages.error(request, _errors(exc))
            return redirect("tokens", slug=self.workspace.slug)
        return self.get(request, slug, secret=issued.secret)


def _budget(token: ApiToken) -> Any:
    """The key's own monthly budget (usage.KeyBudget), or None: read through the reverse
    relation, which raises when the key has none."""
    return getattr(token, "budget", None)


def _token_options(request: HttpRequest) -> dict[str, Any]:
    """The new token's scope, expiry and rate limit from the form (ValidationError when one
    is not readable)."""
    options: dict[str, Any] = {}
    if request.POST.get("scope") == "flows":
        options["flow_ids"] = [_int(v) for v in request.POST.getlist("flows")]
    if expires := request.POST.get("expires_on", "").strip():
        try:
            day = date.fromisoformat(expires)
        except ValueError as exc:
            raise ValidationError({"expires_at": ["The expiry is not a date."]}) from exc
        # Valid until that day starts (UTC): a whole number of days, whatever the zone.
        options["expires_at"] = datetime.combine(day, time.min, tzinfo=UTC)
    if limit := request.POST.get("rate_limit", "").strip():
        if not limit.isdigit() or len(limit) > 9:
            raise ValidationError({"rate_limit": ["The rate limit is a whole number."]})
        options["rate_limit_per_minute"] = int(limit)
    return options


class AcceptInvitationForm(SetPasswordForm):
    name = forms.CharField(max_length=150, required=False)


def accept_invitation(request: HttpRequest, token: str) -> HttpResponse:
    """Join through an invitation link: signed in as the invitee, or by creating an account."""
    invitation = services.invitation_for_token(token)
    if invitation is None:
        return render(request, "accounts/invitation_invalid.html", status=404)
    user = request.user if request.user.is_authenticated else None
    existing = User.objects.filter(email__iexact=invitation.email).first()
    if user is None and existing is not None:
        messages.info(request, "Sign in as the invited address to accept the invitation.")
        return redirect(f"{reverse('login')}?next={request.path}")
    form = AcceptInvitationForm(user=User(email=invitation.email), data=request.POST or None)
    if request.method == "POST":
        try:
            if user is None:
                if not form.is_valid():
                    return render(
                        request, "accounts/accept.html", {"invitation": invitation, "form": form}
                    )
                membership = services.invitation_accept(
                    token=token,
                    password=form.cleaned_data["new_password1"],
                    name=form.cleaned_data.get("name", ""),
                )
                login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
            else:
                membership = services.invitation_accept(token=token, user=user)
        except ValidationError as exc:
            messages.error(request, _errors(exc))
            return redirect("home")
        messages.success(request, f"Welcome to {membership.workspace.name}.")
        return redirect("workspace_home", slug=membership.workspace.slug)
    return render(
        request,
        "accounts/accept.html",
        {"invitation": invitation, "form": None if user else form, "signed_in": user},
    )
