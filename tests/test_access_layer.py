"""The access layer: one way to load each tenant object, the role declared where the
route is, and the defects the scattered lookups had."""

from __future__ import annotations

import json

import pytest
from django.db.models.signals import pre_save
from django.test import Client
from django.utils import timezone

from accounts.models import Invitation, Membership, Role, User
from accounts.services import invitation_create
from accounts.tenancy import WorkspaceMixin
from audit.models import AuditEntry
from flows import services as flow_services
from runs.models import Run
from tests import flowgraphs
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _api(secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}", "content_type": "application/json"}


def test_the_api_refuses_to_run_a_deleted_flow(workspace_a, erin_editor, token_for):
    flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="x", delay_ms=0)
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    flow_services.flow_delete(workspace=workspace_a, acting=acting, flow=flow)
    response = Client().post(
        f"/api/w/acme/flows/{flow.pk}/runs",
        json.dumps({"inputs": {"input": "x"}}),
        **_api(token_for(workspace_a, erin_editor)),
    )
    assert response.status_code == 404
    assert not Run.objects.exists()


def test_the_compare_page_records_a_probe_of_another_workspaces_run(
    client_for, workspace_a, erin_editor, workspace_b, mallory_owner
):
    mine = Run.objects.create(
        workspace=workspace_a,
        flow=(flow := flowgraphs.demo_flow(workspace_a, erin_editor, reply="a", delay_ms=0)),
        flow_version=flow.versions.get(),
        session_id="s",
        started_by=erin_editor,
        inputs={},
    )
    theirs_flow = flowgraphs.demo_flow(workspace_b, mallory_owner, reply="b", delay_ms=0)
    theirs = Run.objects.create(
        workspace=workspace_b,
        flow=theirs_flow,
        flow_version=theirs_flow.versions.get(),
        session_id="s",
        started_by=mallory_owner,
        inputs={},
    )
    response = client_for(erin_editor).get(f"/w/acme/runs/{mine.pk}/compare/{theirs.pk}/")
    assert response.status_code == 404
    denial = AuditEntry.objects.filter(action="access.denied").order_by("-seq").first()
    assert denial is not None and denial.target == f"run:{theirs.pk}"
    assert denial.after == {"reason": "other_workspace"}


def test_a_revoked_invitation_never_leaves_a_signed_in_non_member(workspace_a, alice_owner):
    owner = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    issued = invitation_create(
        workspace=workspace_a,
        acting=owner,
        email="late@example.com",
        role=Role.EDITOR,
        base_url="http://testserver",
    )

    def revoke_meanwhile(sender, instance, **kwargs):  # an admin revokes as the account is made
        Invitation.objects.filter(pk=issued.invitation.pk).update(revoked_at=timezone.now())

    visitor = Client()
    assert visitor.get(f"/invite/{issued.token}/").status_code == 200
    pre_save.connect(revoke_meanwhile, sender=User, dispatch_uid="test-revoke")
    try:
        visitor.post(
            f"/invite/{issued.token}/",
            {"name": "Late", "new_password1": PASSWORD, "new_password2": PASSWORD},
        )
    finally:
        pre_save.disconnect(dispatch_uid="test-revoke", sender=User)
    user = User.objects.filter(email="late@example.com").first()
    member = user is not None and Membership.objects.filter(user=user).exists()
    signed_in = "_auth_user_id" in visitor.session
    assert not (signed_in and not member), "a signed-in user who is not a member"
    assert (user is None) or member  # no account left behind without its membership


def test_page_views_must_declare_every_handler_in_their_role_map():
    from django.views import View

    with pytest.raises(TypeError, match="does not declare POST"):

        class Forgetful(WorkspaceMixin, View):  # noqa: F841
            role_map = {"GET": Role.VIEWER}

            def get(self, request, slug):  # pragma: no cover
                return None

            def post(self, request, slug):  # pragma: no cover
                return None


def test_a_method_a_page_does_not_declare_is_refused(client_for, workspace_a, alice_owner):
    client = client_for(alice_owner)
    assert client.get("/w/acme/runs/").status_code == 200
    assert client.post("/w/acme/runs/").status_code == 405
    assert client.delete("/w/acme/flows/").status_code == 405


def test_an_api_route_without_a_declared_role_stops_the_start():
    from django.core.exceptions import ImproperlyConfigured
    from ninja import NinjaAPI, Router

    from accounts.api_auth import minimum_role
    from config.api import enforce_roles

    router = Router()

    @router.get("declared")
    @minimum_role(Role.VIEWER)
    def declared(request):  # pragma: no cover
        return {}

    @router.post("forgotten")
    def forgotten(request):  # pragma: no cover
        return {}

    api = NinjaAPI(urls_namespace="access-layer-test")
    api.add_router("/", router)
    with pytest.raises(ImproperlyConfigured, match="forgotten"):
        enforce_roles(api)
