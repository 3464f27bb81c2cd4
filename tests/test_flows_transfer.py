"""Flows coming in and going out: flow files (export, import with refusals and cleared
credentials), starter templates (each valid and runnable offline), the router preview
(the server's own RE2 matcher, Chinese keywords included) and the offline demo agent."""

from __future__ import annotations

import json

import pytest

from accounts.models import Membership
from audit.models import AuditEntry
from flows import services, transfer
from flows.builder import build_plan, validate_graph
from flows.demo import support_bot_graph
from flows.models import Flow, FlowDraft, FlowVersion
from flows.starters import STARTERS
from knowledge.models import KnowledgeDocument
from tests.fakes.runner import run_plan

pytestmark = pytest.mark.django_db


def api(path: str, slug: str = "acme") -> str:
    return f"/api/w/{slug}/{path}"


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def acting(workspace, user) -> Membership:
    return Membership.objects.get(workspace=workspace, user=user)


def document(graph: dict, **extra) -> dict:
    return {"format": "flowdeck.flow", "format_version": 1, "name": "Bot", "graph": graph, **extra}


# --- export and import --------------------------------------------------------------------------
def test_an_exported_flow_imports_as_exactly_the_same_graph(client_for, workspace_a, erin_editor):
    graph = support_bot_graph()
    graph["annotations"] = [
        {
            "id": "note_1",
            "kind": "note",
            "text": "Routes by intent",
            "position": {"x": 0, "y": -120},
            "size": {"width": 240, "height": 100},
            "color": "yellow",
        }
    ]
    flow = services.flow_create(
        workspace=workspace_a,
        acting=acting(workspace_a, erin_editor),
        name="Support bot",
        description="The seed's bot",
        graph=graph,
    )
    client = client_for(erin_editor)
    response = client.get(api(f"flows/{flow.pk}/export"))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="support-bot.flowdeck.json"'
    exported = json.loads(response.content)
    assert exported["format"] == "flowdeck.flow" and exported["format_version"] == 1
    assert exported["graph"] == graph and exported["description"] == "The seed's bot"
    assert AuditEntry.objects.filter(action="flow.export", target=f"flow:{flow.pk}").count() == 1

    imported = post(client, api("flows/import"), {"document": exported})
    assert imported.status_code == 201, imported.content
    body = imported.json()
    assert body["report"]["lands_as"] == "version" and body["report"]["refused"] == []
    copy = Flow.objects.get(pk=body["flow"]["id"])
    assert copy.name == "Support bot" and copy.description == "The seed's bot"
    assert FlowVersion.objects.get(flow=copy).graph == graph
    assert AuditEntry.objects.get(action="flow.create", target=f"flow:{copy.pk}").after == {
        "name": "Support bot",
        "origin": "import",
    }


def test_unknown_and_disabled_components_refuse_the_import_naming_each_node(
    client_for, workspace_a, carol_admin, erin_editor
):
    services.workspace_policy_set(
        workspace=workspace_a, acting=acting(workspace_a, carol_admin), changes={"llm.demo": False}
    )
    graph = support_bot_graph()
    graph["nodes"][0]["component"] = "llm.shiny_new"  # "question"
    before = Flow.objects.count()
    response = post(client_for(erin_editor), api("flows/import"), {"document": document(graph)})
    assert response.status_code == 400
    refused = response.json()["report"]["refused"]
    assert {item["node_id"]: item["component"] for item in refused} == {
        "question": "llm.shiny_new",
        "answer_model": "llm.demo",
        "handoff_model": "llm.demo",
    }
    reasons = " ".join(item["reason"] for item in refused)
    assert "does not have" in reasons and "disabled in this workspace" in reasons
    assert Flow.objects.count() == before  # nothing was created


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ([1, 2], "JSON object"),
        ({"format": "langflow", "graph": {}}, "not a Flowdeck flow file"),
        ({"format": "flowdeck.flow", "format_version": 9, "graph": {}}, "newer Flowdeck"),
        ({"format": "flowdeck.flow", "format_version": "1", "graph": {}}, "whole number"),
        ({"format": "flowdeck.flow", "format_version": 1}, "no flow graph"),
        (
            {"format": "flowdeck.flow", "format_version": 1, "graph": {"nodes": [{"id": "x y"}]}},
            "node id",
        ),
    ],
)
def test_files_that_are_no_flow_are_refused_with_a_reason(client_for, erin_editor, doc, words):
    response = post(client_for(erin_editor), api("flows/import"), {"document": doc})
    assert response.status_code == 400
    assert words in " ".join(i["reason"] for i in response.json()["report"]["refused"])
    assert not Flow.objects.filter(name="Bot").exists()


def test_credentials_are_cleared_and_listed_and_the_flow_lands_as_a_draft(
    client_for, workspace_a, erin_editor
):
    graph = {
        "nodes": [
            {"id": "in", "component": "io.chat_input", "params": {}, "position": {"x": 0, "y": 0}},
            {
                "id": "gpt",
                "component": "llm.openai_chat",
                "params": {"credential": 4242, "model": "gpt-4o-mini"},
                "position": {"x": 250, "y": 0},
            },
            {
                "id": "out",
                "component": "io.text_output",
                "params": {},
                "position": {"x": 500, "y": 0},
            },
        ],
        "edges": [
            {"source": "in", "source_port": "text", "target": "gpt", "target_port": "prompt"},
            {"source": "gpt", "source_port": "text", "target": "out", "target_port": "text"},
        ],
    }
    checked = post(
        client_for(erin_editor), api("flows/import/check"), {"document": document(graph)}
    )
    assert checked.status_code == 200 and checked.json()["lands_as"] == "draft"
    assert not Flow.objects.filter(name="Bot").exists()  # a check writes nothing

    response = post(client_for(erin_editor), api("flows/import"), {"document": document(graph)})
    assert response.status_code == 201
    report = response.json()["report"]
    assert report["lands_as"] == "draft"
    assert [(c["node_id"], c["param"]) for c in report["cleared"]] == [("gpt", "credential")]
    assert "workspace it was made in" in report["cleared"][0]["reason"]
    assert [p["node_id"] for p in report["problems"]] == ["gpt"]  # pick a credential
    flow = Flow.objects.get(pk=response.json()["flow"]["id"])
    assert not FlowVersion.objects.filter(flow=flow).exists()
    draft = FlowDraft.objects.get(flow=flow)
    assert draft.workspace_id == workspace_a.pk
    assert draft.graph["nodes"][1]["params"] == {"model": "gpt-4o-mini"}


def test_the_flow_list_imports_a_file_or_shows_why_not(client_for, erin_editor):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = client_for(erin_editor)

    def upload(content: bytes):
        file = SimpleUploadedFile("flow.json", content, content_type="application/json")
        return client.post("/w/acme/flows/", {"action": "import", "file": file})

    good = upload(json.dumps(document(support_bot_graph(), name="From a file")).encode())
    assert good.status_code == 302
    flow = Flow.objects.get(name="From a file")
    assert good["Location"] == f"/w/acme/flows/{flow.pk}/"
    assert FlowVersion.objects.get(flow=flow).graph == support_bot_graph()

    broken = support_bot_graph()
    broken["nodes"][1]["component"] = "logic.teleport"
    refused = upload(json.dumps(document(broken, name="Refused")).encode())
    assert refused.status_code == 400
    html = refused.content.decode()
    assert "was not imported" in html and "“intent” uses the component" in html
    assert "logic.teleport" in html
    assert upload(b"\xff not json").status_code == 400
    assert not Flow.objects.filter(name="Refused").exists()


def test_export_and_import_respect_tenancy(
    client_for, mallory_owner, bob_viewer, workspace_a, erin_editor
):
    flow = services.flow_create(
        workspace=workspace_a,
        acting=acting(workspace_a, erin_editor),
        name="Ours",
        graph=support_bot_graph(),
    )
    assert client_for(mallory_owner).get(api(f"flows/{flow.pk}/export")).status_code == 404
    assert client_for(mallory_owner).get(api(f"flows/{flow.pk}/export", "bravo")).status_code == 404
    assert client_for(bob_viewer).get(api(f"flows/{flow.pk}/export")).status_code == 200
    viewer_import = post(
        client_for(bob_viewer), api("flows/import"), {"document": document(support_bot_graph())}
    )
    assert viewer_import.status_code == 403


# --- starter templates --------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # components read documents from another thread
@pytest.mark.parametrize("key", sorted(STARTERS))
def test_each_template_is_valid_and_runs_offline(workspace_a, erin_editor, key):
    starter = STARTERS[key]
    flow = transfer.flow_from_starter(
        workspace=workspace_a, acting=acting(workspace_a, erin_editor), key=key
    )
    assert flow.name == starter.name and flow.description == starter.description
    version = FlowVersion.objects.get(flow=flow)
    assert version.graph == starter.graph() and not version.is_draft
    for collection, documents in starter.documents:
        titles = set(
            KnowledgeDocument.objects.filter(
                workspace=workspace_a, knowledge_base__name=collection
            ).values_list("name", flat=True)
        )
        assert titles == {title for title, _ in documents}
    graph = starter.graph()
    for node in graph["nodes"]:  # no waiting between tokens in a unit test
        if "delay_ms" in node["params"]:
            node["params"]["delay_ms"] = 0
    plan = build_plan(graph, workspace_a)
    assert all(
        not node.component.key.startswith(
            ("llm.openai", "llm.anthropic", "llm.ollama", "agent.tools")
        )
        for node in plan.nodes.values()
    ), "templates run offline"
    results, contexts = run_plan(
        plan, {plan.input_node_ids[0]: starter.try_input}, workspace_id=workspace_a.pk
    )
    answers = [results[n] for n in plan.output_node_ids if results[n] is not None]
    assert answers and all(a["text"].strip() for a in answers), results
    if key == "tool-agent":
        (call,) = contexts["agent"].of("on_tool_call")
        assert call["tool_name"] == "calculator" and call["tool_input"] == {"expression": "6 * 7"}
        assert "42" in answers[0]["text"]
    if key == "document-qa":
        assert "28 days" in answers[0]["text"]


def test_templates_through_the_api_and_the_list_page(client_for, erin_editor, bob_viewer):
    listed = client_for(bob_viewer).get(api("flow-templates")).json()
    assert [t["key"] for t in listed] == list(STARTERS)
    assert {"basic-prompting", "memory-chatbot", "document-qa", "tool-agent", "support-bot"} <= {
        t["key"] for t in listed
    }
    created = post(client_for(erin_editor), api("flows"), {"name": "", "template": "document-qa"})
    assert created.status_code == 201 and created.json()["name"] == "Document Q&A"
    assert created.json()["latest_version"] == 1
    page = client_for(erin_editor).post(
        "/w/acme/flows/", {"action": "create", "template": "support-bot", "name": "My bot"}
    )
    assert page.status_code == 302
    graph = Flow.objects.get(name="My bot").versions.get().graph
    assert (
        graph == STARTERS["support-bot"].graph() and graph["nodes"] == support_bot_graph()["nodes"]
    )
    unknown = client_for(erin_editor).post(
        "/w/acme/flows/", {"action": "create", "template": "../../etc"}
    )
    assert unknown.status_code == 302 and not Flow.objects.filter(name="../../etc").exists()
    html = client_for(erin_editor).get("/w/acme/flows/").content.decode()
    for starter in STARTERS.values():
        assert starter.name in html.replace("&amp;", "&") and starter.description in html


# --- router preview -----------------------------------------------------------------------------
def test_router_preview_uses_the_servers_matcher_including_chinese_keywords(
    client_for, erin_editor, workspace_a
):
    rules = {
        "rules": [
            {"output": "billing", "match": "keyword", "pattern": "invoice, refund"},
            {"output": "human", "match": "keyword", "pattern": "人工, 客服"},
            {"output": "order", "match": "regex", "pattern": r"order\s+#?\d{4,}"},
        ],
        "default_output": "faq",
    }

    def preview(text: str, params: dict = rules) -> dict:
        response = post(
            client_for(erin_editor), api("router/preview"), {"params": params, "text": text}
        )
        assert response.status_code == 200, response.content
        return response.json()

    assert preview("我要人工客服") == {"output": "human", "rule": 2, "problems": []}
    assert preview("Where is ORDER #12345?")["output"] == "order"
    assert preview("Please REFUND me")["output"] == "billing"  # case-insensitive by default
    assert preview("refunded")["output"] == "faq"  # keywords are whole words in spaced scripts
    assert preview("hello") == {"output": "faq", "rule": None, "problems": []}
    bad = preview("x", {"rules": [{"output": "o", "match": "regex", "pattern": "(?=x)"}]})
    assert bad["output"] is None
    assert bad["problems"][0]["message"].startswith("Rule 1: The regular expression can't be used")
    assert "lookaround" in bad["problems"][0]["message"]
    shape = preview("x", {"rules": [{"output": "no spaces!", "pattern": "a"}]})
    assert (
        shape["output"] is None
        and "“Rule 1 output” is not allowed" in shape["problems"][0]["message"]
    )

    # And a run routes exactly as previewed.
    graph = support_bot_graph()
    plan = build_plan(graph, workspace_a)
    results, _ = run_plan(plan, {"question": "我要人工客服"}, workspace_id=workspace_a.pk)
    assert results["intent"] == {"human": "我要人工客服"}
    assert results["retrieve"] is None  # the FAQ branch was not taken
    assert validate_graph(graph, workspace_a) == []
