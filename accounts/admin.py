"""Admin for platform staff: users, workspaces, memberships, invitations and API tokens.

Token and invitation hashes are never shown; tokens cannot be created here (the secret
would have nowhere safe to go) — only revoked.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import ApiToken, Invitation, Membership, User, Workspace
from audit.admin_mixins import AuditedAdmin, changed, record_admin


@admin.register(User)
class UserAdmin(AuditedAdmin, BaseUserAdmin):
    # Password changes are recorded by User.save (every door), not here.
    audit_fields = ("email", "name", "is_active", "is_staff", "is_superuser")
    ordering = ["email"]
    list_display = ["email", "name", "is_active", "is_staff", "date_joined", "last_login"]
    list_filter = ["is_active", "is_staff", "is_superuser"]
    search_fields = ["email", "name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    readonly_fields = ["last_login", "date_joined"]

    def audit_change(self, request: HttpRequest, obj: Any, before: Any, after: Any) -> None:
        target = f"user:{obj.pk}"
        if before is None:
            record_admin(request, action="user.create", target=target, after=after)
            return
        if after is None:
            record_admin(request, action="user.delete", target=target, before=before)
            return
        if before["is_active"] != after["is_active"]:
            action = "user.activate" if after["is_active"] else "user.deactivate"
            record_admin(request, action=action, target=target, after={"email": obj.email})
        old, new = changed(before, after)
        old.pop("is_active", None)
        new.pop("is_active", None)
        if new:
            record_admin(request, action="user.update", target=target, before=old, after=new)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


def _record_membership(
    request: HttpRequest, membership: Membership, before: Any, after: Any
) -> None:
    workspace = Workspace.objects.filter(pk=membership.workspace_id).first()
    target = f"membership:{membership.pk}"
    email = User.objects.filter(pk=membership.user_id).values_list("email", flat=True).first()
    if before is None:
        action, before, after = "member.add", None, {"role": after["role"], "email": email}
    elif after is None:
        action, before = "member.remove", {"role": before["role"], "email": email}
    else:
        action, before = "member.role_change", {"role": before["role"], "email": email}
        after = {"role": after["role"]}
    record_admin(
        request, action=action, workspace=workspace, target=target, before=before, after=after
    )


@admin.register(Workspace)
class WorkspaceAdmin(AuditedAdmin):
    list_display = ["name", "slug", "member_count", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]
    audit_fields = ("name", "slug", "http_allowlist")

    def audit_change(self, request: HttpRequest, obj: Any, before: Any, after: Any) -> None:
        target = f"workspace:{obj.slug}"
        if before is None:
            record_admin(
                request, action="workspace.create", workspace=obj, target=target, after=after
            )
        elif after is None:
            record_admin(request, action="workspace.delete", target=target, before=before)
        else:
            old, new = changed(before, after)
            record_admin(
                request,
                action="workspace.update",
                workspace=obj,
                target=target,
                before=old,
                after=new,
            )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        stored = {m.pk: m.role for m in Membership.objects.filter(workspace=form.instance)}
        super().save_formset(request, form, formset, change)
        for membership in formset.deleted_objects:
            _record_membership(request, membership, {"role": stored.get(membership.pk)}, None)
        for membership in formset.new_objects:
            _record_membership(request, membership, None, {"role": membership.role})
        for membership, _fields in formset.changed_objects:
            if stored.get(membership.pk) != membership.role:
                _record_membership(
                    request,
                    membership,
                    {"role": stored.get(membership.pk)},
                    {"role": membership.role},
                )

    @admin.display(description="members")
    def member_count(self, obj: Workspace) -> int:
        return obj.memberships.count()


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["user__email", "workspace__slug"]
    autocomplete_fields = ["user", "workspace"]
    audit_fields = ("role", "workspace_id", "user_id")

    def audit_change(self, request: HttpRequest, obj: Any, before: Any, after: Any) -> None:
        if before is not None and after is not None and before["role"] == after["role"]:
            # Moved to another user or workspace: what was is removed, what is is added.
            moved = Membership(
                pk=obj.pk, workspace_id=before["workspace_id"], user_id=before["user_id"]
            )
            _record_membership(request, moved, before, None)
            _record_membership(request, obj, None, after)
            return
        _record_membership(request, obj, before, after)


@admin.register(Invitation)
class InvitationAdmin(AuditedAdmin):
    audit_fields = ("email", "role", "workspace_id")

    def audit_change(self, request: HttpRequest, obj: Any, before: Any, after: Any) -> None:
        if after is None:  # read-only otherwise: deleting is the only change
            record_admin(
                request,
                action="member.invite_revoke",
                workspace=Workspace.objects.filter(pk=obj.workspace_id).first(),
                target=f"invitation:{obj.pk}",
                before={"email": obj.email, "role": obj.role},
            )

    list_display = ["email", "workspace", "role", "created_at", "expires_at", "accepted_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["email", "workspace__slug"]
    exclude = ["token_hash"]
    readonly_fields = [
        "workspace",
        "email",
        "role",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "revoked_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.action(description="Revoke selected tokens")
@transaction.atomic
def revoke_tokens(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    for token in queryset.filter(revoked_at__isnull=True).select_for_update():
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        record_admin(
            request,
            action="token.revoke",
            workspace=Workspace.objects.get(pk=token.workspace_id),
            target=f"token:{token.pk}",
            before={"name": token.name, "prefix": token.prefix, "owner": token.user_id},
        )


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    audit_fields = ("name", "prefix", "user_id", "workspace_id", "revoked_at")

    def audit_change(self, request: HttpRequest, obj: Any, before: Any, after: Any) -> None:
        if after is None and obj.revoked_at is None:  # deleting a live token revokes it
            record_admin(
                request,
                action="token.revoke",
                workspace=Workspace.objects.filter(pk=obj.workspace_id).first(),
                target=f"token:{obj.pk}",
                before={"name": obj.name, "prefix": obj.prefix, "owner": obj.user_id},
            )

    list_display = [
        "prefix",
        "name",
        "user",
        "workspace",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["workspace"]
    search_fields = ["prefix", "name", "user__email", "workspace__slug"]
    exclude = ["token_hash"]
    readonly_fields = [
        "workspace",
        "user",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = [revoke_tokens]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
