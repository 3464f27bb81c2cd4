"""The flows API: roles, tenancy (another workspace's member gets 404, anonymous 401) and
credential secrecy (an API key never comes back in any response)."""

from __future__ import annotations

import json

import pytest

from accounts.models import Membership
from flows import services
from flows.demo import hello_graph
from flows.models import Credential, Flow, FlowVersion

pytestmark = pytest.mark.django_db

SECRET = "sk-top-secret-4242"


def api(slug: str, path: str = "") -> str:
    return f"/api/w/{slug}/{path}"


def post(client, url, body, method="post"):
    return getattr(client, method)(url, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def flow_a(workspace_a, alice_owner):
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    return services.flow_create(
        workspace=workspace_a, acting=acting, name="Hello", graph=hello_graph()
    )


@pytest.fixture
def credential_a(workspace_a, alice_owner):
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    return services.credential_create(
        workspace=workspace_a,
        acting=acting,
        name="openai",
        provider="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key=SECRET,
    )


# --- catalog ------------------------------------------------------------------------------------
def test_catalog_lists_components_with_ports_and_json_schema(client_for, bob_viewer):
    response = client_for(bob_viewer).get(api("acme", "components"))
    assert response.status_code == 200
    catalog = {c["key"]: c for c in response.json()}
    assert {
        "io.chat_input",
        "io.text_output",
        "prompt.template",
        "llm.openai_chat",
        "llm.demo",
    } <= set(catalog)
    demo = catalog["llm.demo"]
    assert demo["inputs"][0]["name"] == "prompt" and demo["outputs"][0] == {
        "name": "text",
        "type": "text",
        "label": "Reply",
        "required": True,
        "multi": False,
    }
    assert set(demo["params"]["properties"]) == {"reply", "delay_ms", "system_prompt"}
    assert (
        catalog["llm.openai_chat"]["params"]["properties"]["credential"]["format"] == "credential"
    )


def test_anonymous_gets_401_and_outsiders_404(client_for, mallory_owner, workspace_b, flow_a):
    assert client_for(None).get(api("acme", "components")).status_code == 401
    assert client_for(None).get(api("acme", "flows")).status_code == 401
    outsider = client_for(mallory_owner)
    for path in ("components", "flows", f"flows/{flow_a.pk}", "credentials", "whitelist"):
        assert outsider.get(api("acme", path)).status_code == 404, path


def test_a_flow_of_another_workspace_is_404_through_ones_own_workspace(
    client_for, mallory_owner, workspace_b, flow_a
):
    client = client_for(mallory_owner)
    assert client.get(api("bravo", f"flows/{flow_a.pk}")).status_code == 404
    assert client.get(api("bravo", f"flows/{flow_a.pk}/versions/1")).status_code == 404
    response = post(client, api("bravo", f"flows/{flow_a.pk}/versions"), {"graph": hello_graph()})
    assert response.status_code == 404
    assert FlowVersion.objects.filter(flow=flow_a).count() == 1


def test_bearer_token_of_another_workspace_is_401(
    token_for, workspace_b, mallory_owner, client_for, flow_a
):
    token = token_for(workspace_b, mallory_owner)
    response = client_for(None).get(api("acme", "flows"), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401


# --- flows and versions ---------------------------------------------------------------------------
def test_editor_creates_a_flow_and_saves_numbered_versions(client_for, erin_editor):
    client = client_for(erin_editor)
    response = post(client, api("acme", "flows"), {"name": "Mine", "graph": hello_graph()})
    assert response.status_code == 201, response.content
    flow_id = response.json()["id"]
    assert response.json()["latest_version"] == 1
    graph = hello_graph()
    graph["nodes"][2]["params"]["reply"] = "changed"
    response = post(
        client, api("acme", f"flows/{flow_id}/versions"), {"graph": graph, "note": "v2"}
    )
    assert response.status_code == 201
    assert response.json()["number"] == 2 and response.json()["note"] == "v2"
    detail = client.get(api("acme", f"flows/{flow_id}")).json()
    assert detail["graph"] == graph
    assert [v["number"] for v in detail["versions"]] == [2, 1]
    one = client.get(api("acme", f"flows/{flow_id}/versions/1")).json()
    assert one["graph"] == hello_graph()
    assert one["checksum"] == services.graph_checksum(hello_graph())
    listed = client.get(api("acme", "flows")).json()
    assert [(f["name"], f["latest_version"]) for f in listed] == [("Mine", 2)]


def test_invalid_version_is_400_with_every_problem_and_saves_nothing(
    client_for, erin_editor, flow_a
):
    graph = {
        "nodes": [
            {"id": "a", "component": "os.system", "params": {}},
            {"id": "b", "component": "llm.demo", "params": {"delay_ms": "fast"}},
        ],
        "edges": [{"source": "a", "source_port": "x", "target": "b", "target_port": "prompt"}],
    }
    response = post(
        client_for(erin_editor), api("acme", f"flows/{flow_a.pk}/versions"), {"graph": graph}
    )
    assert response.status_code == 400
    codes = {(p["node_id"], p["code"]) for p in response.json()["problems"]}
    assert ("a", "unknown_component") in codes
    assert ("b", "invalid_param") in codes
    assert FlowVersion.objects.filter(flow=flow_a).count() == 1


def test_validate_endpoint_reports_valid_and_problems(client_for, erin_editor):
    client = client_for(erin_editor)
    ok = post(client, api("acme", "flows/validate"), {"graph": hello_graph()})
    assert ok.status_code == 200 and ok.json() == {"valid": True, "problems": []}
    bad = post(client, api("acme", "flows/validate"), {"graph": {"nodes": "x"}})
    assert bad.json()["valid"] is False
    assert bad.json()["problems"][0]["code"] == "invalid_graph"


def test_viewer_reads_but_cannot_write_flows(client_for, bob_viewer, flow_a):
    client = client_for(bob_viewer)
    assert client.get(api("acme", f"flows/{flow_a.pk}")).status_code == 200
    assert post(client, api("acme", "flows"), {"name": "x"}).status_code == 403
    assert (
        post(
            client, api("acme", f"flows/{flow_a.pk}/versions"), {"graph": hello_graph()}
        ).status_code
        == 403
    )
    assert post(client, api("acme", "flows/validate"), {"graph": hello_graph()}).status_code == 403
    assert client.delete(api("acme", f"flows/{flow_a.pk}")).status_code == 403
    assert Flow.objects.filter(workspace__slug="acme").count() == 1


def test_flow_versions_are_immutable(flow_a):
    version = FlowVersion.objects.get(flow=flow_a)
    version.note = "edited"
    with pytest.raises(Exception, match="immutable"):
        version.save()
    with pytest.raises(Exception, match="immutable"):
        FlowVersion.objects.filter(pk=version.pk).update(note="edited")
    assert FlowVersion.objects.get(pk=version.pk).note == ""


def test_deleting_the_author_keeps_the_version(flow_a, alice_owner):
    version = FlowVersion.objects.get(flow=flow_a)
    alice_owner.delete()
    assert FlowVersion.objects.get(pk=version.pk).created_by is None


def test_deep_json_body_is_a_clear_400_not_a_500(client_for, erin_editor):
    body = '{"graph": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client_for(erin_editor).post(
        api("acme", "flows/validate"), data=body, content_type="application/json"
    )
    assert response.status_code in (400, 422)


# --- credentials ---------------------------------------------------------------------------------
def test_admin_manages_credentials_and_the_key_never_comes_back(
    client_for, carol_admin, credential_a
):
    client = client_for(carol_admin)
    created = post(
        client,
        api("acme", "credentials"),
        {
            "name": "vllm",
            "provider": "openai",
            "base_url": "http://10.0.0.5:8000/v1",
            "api_key": SECRET,
        },
    )
    assert created.status_code == 201
    cid = created.json()["id"]
    updated = post(
        client, api("acme", f"credentials/{cid}"), {"name": "vllm2", "api_key": SECRET + "x"}, "put"
    )
    listed = client.get(api("acme", "credentials"))
    for response in (created, updated, listed):
        assert SECRET not in response.content.decode()
        assert "api_key" not in response.content.decode().replace("has_api_key", "")
    assert updated.json()["has_api_key"] is True and updated.json()["name"] == "vllm2"
    stored = Credential.objects.get(pk=cid)
    assert SECRET not in stored.api_key_encrypted  # encrypted at rest
    assert client.delete(api("acme", f"credentials/{cid}")).status_code == 204
    assert not Credential.objects.filter(pk=cid).exists()


def test_credential_key_is_absent_from_every_flows_api_response(
    client_for, alice_owner, credential_a
):
    client = client_for(alice_owner)
    graph = {
        "nodes": [
            {"id": "in", "component": "io.chat_input"},
            {"id": "m", "component": "llm.openai_chat", "params": {"credential": credential_a.pk}},
        ],
        "edges": [{"source": "in", "source_port": "text", "target": "m", "target_port": "prompt"}],
    }
    flow = post(client, api("acme", "flows"), {"name": "with model", "graph": graph}).json()
    bodies = [
        client.get(api("acme", path)).content.decode()
        for path in (
            "components",
            "credentials",
            "flows",
            f"flows/{flow['id']}",
            f"flows/{flow['id']}/versions/1",
            "whitelist",
        )
    ]
    bodies.append(client.get("/api/openapi.json").content.decode())
    assert all(SECRET not in body for body in bodies)


def test_editor_and_viewer_cannot_write_credentials(
    client_for, erin_editor, bob_viewer, credential_a
):
    for user in (erin_editor, bob_viewer):
        client = client_for(user)
        assert client.get(api("acme", "credentials")).status_code == 200
        assert (
            post(client, api("acme", "credentials"), {"name": "x", "api_key": "k"}).status_code
            == 403
        )
        assert (
            post(
                client, api("acme", f"credentials/{credential_a.pk}"), {"api_key": "k"}, "put"
            ).status_code
            == 403
        )
        assert client.delete(api("acme", f"credentials/{credential_a.pk}")).status_code == 403
    assert Credential.objects.count() == 1


def test_credential_of_another_workspace_is_404(
    client_for, mallory_owner, workspace_b, credential_a
):
    client = client_for(mallory_owner)
    assert (
        post(
            client, api("bravo", f"credentials/{credential_a.pk}"), {"api_key": "k"}, "put"
        ).status_code
        == 404
    )
    assert client.delete(api("bravo", f"credentials/{credential_a.pk}")).status_code == 404


def test_bad_credential_input_is_400(client_for, carol_admin):
    client = client_for(carol_admin)
    assert (
        post(client, api("acme", "credentials"), {"name": "x", "provider": "pickle"}).status_code
        == 400
    )
    assert (
        post(
            client, api("acme", "credentials"), {"name": "x", "base_url": "file:///etc/passwd"}
        ).status_code
        == 400
    )
    assert post(client, api("acme", "credentials"), {"name": ""}).status_code == 400


# --- documents ------------------------------------------------------------------------------------
def test_documents_upload_list_delete(
    client_for, erin_editor, bob_viewer, mallory_owner, workspace_b
):
    client = client_for(erin_editor)
    created = post(
        client, api("acme", "documents"), {"title": "FAQ", "content": "hello", "collection": "faq"}
    )
    assert created.status_code == 201
    doc_id = created.json()["id"]
    assert [d["title"] for d in client_for(bob_viewer).get(api("acme", "documents")).json()] == [
        "FAQ"
    ]
    assert (
        post(
            client_for(bob_viewer), api("acme", "documents"), {"title": "x", "content": "y"}
        ).status_code
        == 403
    )
    assert client_for(mallory_owner).delete(api("bravo", f"documents/{doc_id}")).status_code == 404
    assert client.delete(api("acme", f"documents/{doc_id}")).status_code == 204


def test_openapi_schema_documents_the_flows_routes(client_for, bob_viewer):
    schema = client_for(None).get("/api/openapi.json").json()
    paths = set(schema["paths"])
    for path in (
        "/api/w/{slug}/components",
        "/api/w/{slug}/credentials",
        "/api/w/{slug}/credentials/{credential_id}",
        "/api/w/{slug}/flows",
        "/api/w/{slug}/flows/validate",
        "/api/w/{slug}/flows/{flow_id}",
        "/api/w/{slug}/flows/{flow_id}/versions",
        "/api/w/{slug}/flows/{flow_id}/versions/{number}",
        "/api/w/{slug}/whitelist",
    ):
        assert path in paths, path
    credential_schema = json.dumps(schema["components"]["schemas"]["CredentialOut"])
    assert "api_key" not in credential_schema.replace("has_api_key", "")


def test_flow_list_takes_a_constant_number_of_queries(
    client_for, erin_editor, workspace_a, django_assert_max_num_queries
):
    acting = Membership.objects.get(workspace=workspace_a, user=erin_editor)
    for i in range(8):
        flow = services.flow_create(
            workspace=workspace_a, acting=acting, name=f"f{i}", graph=hello_graph()
        )
        services.flow_version_create(flow=flow, graph=hello_graph(), acting=erin_editor)
    client = client_for(erin_editor)
    client.get(api("acme", "flows"))  # warm up the session
    with django_assert_max_num_queries(8):
        response = client.get(api("acme", "flows"))
    assert [f["latest_version"] for f in response.json()] == [2] * 8


def test_oversized_graphs_are_refused_clearly(client_for, erin_editor):
    client = client_for(erin_editor)
    graph = {
        "nodes": [{"id": "a", "component": "llm.demo", "params": {"reply": "x" * 1_500_000}}],
        "edges": [],
    }
    response = post(client, api("acme", "flows/validate"), {"graph": graph})
    assert response.status_code == 200
    assert response.json()["problems"][0]["code"] == "too_large"
    huge = {"graph": {"nodes": [], "edges": [], "pad": "x" * 3_000_000}}
    assert (
        post(client, api("acme", "flows/validate"), huge).status_code == 400
    )  # over the upload limit
