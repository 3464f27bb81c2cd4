"""The whitelist: platform staff enable/disable components everywhere; workspace admins can
only narrow. Changes take effect for the catalog, validation and execution (build_plan in
the worker), and every change is recorded with who, when, before and after."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied

from accounts.models import Membership
from flows import services
from flows.builder import GraphInvalid, build_plan, validate_graph
from flows.demo import hello_graph
from flows.models import (
    ComponentPolicy,
    ComponentPolicyChange,
    FlowVersion,
    WorkspaceComponentPolicy,
    WorkspaceComponentPolicyChange,
)
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return make_user("ops@example.com", is_staff=True)


def catalog_keys(client, slug="acme") -> set[str]:
    response = client.get(f"/api/w/{slug}/components")
    assert response.status_code == 200
    return {c["key"] for c in response.json()}


def put_whitelist(client, changes: dict, slug="acme"):
    return client.put(
        f"/api/w/{slug}/whitelist",
        data=json.dumps({"changes": changes}),
        content_type="application/json",
    )


def test_platform_disable_removes_the_component_everywhere(
    staff, client_for, alice_owner, mallory_owner, workspace_a, workspace_b
):
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    flow = services.flow_create(
        workspace=workspace_a, acting=acting, name="hello", graph=hello_graph()
    )
    version = FlowVersion.objects.get(flow=flow)
    build_plan(version.graph, workspace_a)  # builds while enabled

    services.platform_policy_set(key="llm.demo", enabled=False, acting=staff)

    assert "llm.demo" not in catalog_keys(client_for(alice_owner))
    assert "llm.demo" not in catalog_keys(client_for(mallory_owner), "bravo")
    assert "component_disabled" in {p.code for p in validate_graph(hello_graph(), workspace_a)}
    with pytest.raises(GraphInvalid) as info:  # the worker's check at execution time
        build_plan(version.graph, workspace_a)
    assert {(p.node_id, p.code) for p in info.value.problems} == {("demo_1", "component_disabled")}

    services.platform_policy_set(key="llm.demo", enabled=True, acting=staff)
    assert "llm.demo" in catalog_keys(client_for(alice_owner))
    assert build_plan(version.graph, workspace_a).order


def test_platform_changes_are_recorded_with_who_and_before_after(staff):
    services.platform_policy_set(key="tool.http_get", enabled=False, acting=staff)
    services.platform_policy_set(key="tool.http_get", enabled=True, acting=staff)
    history = list(ComponentPolicyChange.objects.filter(key="tool.http_get").order_by("pk"))
    assert [(h.before, h.after, h.changed_by) for h in history] == [
        (None, {"enabled": False}, staff),
        ({"enabled": False}, {"enabled": True}, staff),
    ]
    assert all(h.changed_at for h in history)


def test_only_platform_staff_change_the_platform_policy(alice_owner):
    with pytest.raises(PermissionDenied):
        services.platform_policy_set(key="llm.demo", enabled=False, acting=alice_owner)
    assert not ComponentPolicy.objects.exists()


def test_workspace_admin_narrows_only_their_workspace(
    client_for, carol_admin, alice_owner, mallory_owner, workspace_b
):
    response = put_whitelist(client_for(carol_admin), {"prompt.template": False})
    assert response.status_code == 200
    entry = next(e for e in response.json() if e["key"] == "prompt.template")
    assert entry == {
        "key": "prompt.template",
        "label": "Prompt template",
        "platform_enabled": True,
        "workspace_enabled": False,
        "enabled": False,
    }
    assert "prompt.template" not in catalog_keys(client_for(alice_owner))
    assert "prompt.template" in catalog_keys(client_for(mallory_owner), "bravo")
    change = WorkspaceComponentPolicyChange.objects.get()
    assert (change.key, change.before, change.after, change.changed_by) == (
        "prompt.template",
        {"enabled": True},
        {"enabled": False},
        carol_admin,
    )
    # and back
    assert put_whitelist(client_for(carol_admin), {"prompt.template": True}).status_code == 200
    assert "prompt.template" in catalog_keys(client_for(alice_owner))
    assert WorkspaceComponentPolicyChange.objects.count() == 2


def test_workspace_admin_cannot_widen_the_platform_policy(
    staff, client_for, carol_admin, workspace_a
):
    services.platform_policy_set(key="tool.http_get", enabled=False, acting=staff)
    response = put_whitelist(client_for(carol_admin), {"tool.http_get": True})
    assert response.status_code == 400
    assert "platform" in json.dumps(response.json())
    assert not WorkspaceComponentPolicy.objects.filter(enabled=True).exists()
    assert "tool.http_get" not in catalog_keys(client_for(carol_admin))
    graph = {"nodes": [{"id": "h", "component": "tool.http_get"}], "edges": []}
    assert "component_disabled" in {p.code for p in validate_graph(graph, workspace_a)}
    assert not WorkspaceComponentPolicyChange.objects.exists()


def test_a_stale_workspace_row_cannot_enable_what_the_platform_disabled(staff, workspace_a):
    """Even a row written directly (e.g. by an old version) never widens the platform policy."""
    WorkspaceComponentPolicy.objects.create(workspace=workspace_a, key="llm.demo", enabled=True)
    services.platform_policy_set(key="llm.demo", enabled=False, acting=staff)
    assert "component_disabled" in {p.code for p in validate_graph(hello_graph(), workspace_a)}


def test_unknown_keys_and_roles_below_admin_are_refused(
    client_for, carol_admin, erin_editor, bob_viewer
):
    assert put_whitelist(client_for(carol_admin), {"os.system": False}).status_code == 400
    assert put_whitelist(client_for(erin_editor), {"llm.demo": False}).status_code == 403
    assert client_for(bob_viewer).get("/api/w/acme/whitelist").status_code == 403
    assert client_for(carol_admin).get("/api/w/acme/whitelist").status_code == 200
    assert not WorkspaceComponentPolicy.objects.exists()


def test_platform_staff_manage_the_policy_in_the_admin_with_history(staff, client_for, alice_owner):
    # staff without the model permission may not change the policy
    assert (
        client_for(staff).post("/admin/flows/componentpolicy/add/", {"key": "llm.demo"}).status_code
        == 403
    )
    admin_user = make_user("root@example.com", is_staff=True)
    admin_user.is_superuser = True
    admin_user.save()
    client = client_for(admin_user)
    response = client.post("/admin/flows/componentpolicy/add/", {"key": "llm.demo", "enabled": ""})
    assert response.status_code == 302, response.content[:500]
    policy = ComponentPolicy.objects.get(key="llm.demo")
    assert policy.enabled is False and policy.updated_by == admin_user
    response = client.post(
        f"/admin/flows/componentpolicy/{policy.pk}/change/", {"key": "llm.demo", "enabled": "on"}
    )
    assert response.status_code == 302
    history = [
        (h.before, h.after, h.changed_by) for h in ComponentPolicyChange.objects.order_by("pk")
    ]
    assert history == [
        (None, {"enabled": False}, admin_user),
        ({"enabled": False}, {"enabled": True}, admin_user),
    ]
    # a workspace owner who is not platform staff gets no admin
    assert client_for(alice_owner).get("/admin/flows/componentpolicy/").status_code == 302
