"""The `retriever.knowledge` component: the Chinese FAQ through keyword and hybrid, vector
through the fake embeddings endpoint, citations in `on_retrieval`, the tenant check at
validation and at execution; and the data migration that turned document collections into
knowledge bases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import User, Workspace
from flows.builder import validate_graph
from flows.components.base import BuildEnv, NodeError
from flows.components.registry import get_component
from flows.services import credential_create
from knowledge.models import Chunk, KnowledgeBase, KnowledgeDocument
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.fakes.runner import RecordingContext, run_component
from tests.knowledge_helpers import FAQ_ZH, ingest_queued, make_kb, membership, upload

pytestmark = pytest.mark.django_db(transaction=True)  # the component reads in a thread


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    # Ingestion runs here, eagerly: a live worker of the session (other tests start one)
    # must not take these documents (it would not even see this media directory).
    monkeypatch.setattr("knowledge.tasks.dispatch_ingestion", lambda document_id: None)


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def faq_kb(workspace: Workspace, owner: User, client: Any, **kwargs: Any) -> KnowledgeBase:
    kb = make_kb(workspace, owner, name=kwargs.pop("name", "FAQ"), **kwargs)
    files = {name: text.encode() for name, text in FAQ_ZH.items()}
    assert upload(client, workspace.slug, kb.pk, files).status_code == 201
    assert set(ingest_queued(kb)) == {"indexed"}
    kb.refresh_from_db()
    return kb


def problems(workspace: Workspace, params: dict[str, Any]) -> list[Any]:
    component = get_component("retriever.knowledge")
    assert component is not None
    return component.check(component.Params.model_validate(params), BuildEnv(workspace))


def execute(workspace: Workspace, params: dict[str, Any], query: str) -> tuple[Any, Any]:
    component = get_component("retriever.knowledge")
    assert component is not None
    validated = component.Params.model_validate(params)
    env = BuildEnv(workspace)
    assert component.check(validated, env) == []
    built = component.build(validated, env)
    ctx = RecordingContext(workspace.pk)
    return run_component(component, validated, built, {"query": query}, ctx), ctx


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_a_query_for_order_retrieves_the_order_status_document(
    mode, workspace_a, alice_owner, client_for
):
    kb = faq_kb(workspace_a, alice_owner, client_for(alice_owner))
    out, ctx = execute(workspace_a, {"knowledge_base": kb.pk, "mode": mode, "top_k": 2}, "订单")
    assert out["documents"].docs[0].metadata["title"] == "订单状态.txt"
    assert out["context"].startswith("[1] 订单状态.txt: 我想查询订单状态")
    (event,) = ctx.of("on_retrieval")
    hit = event["hits"][0]
    assert {"id", "title", "score", "document_id", "document", "page", "chunk"} <= set(hit)
    assert hit["document"] == hit["title"] == "订单状态.txt"
    assert hit["id"] == hit["document_id"] == KnowledgeDocument.objects.get(name="订单状态.txt").pk
    assert hit["chunk"] == 0 and hit["page"] is None
    assert event["mode"] == mode and event["used"] == "keyword"
    if mode == "hybrid":  # no embeddings model: the event says hybrid ran as keyword
        assert "keyword" in event["notes"][0]


def test_vector_and_hybrid_through_the_fake_embeddings_endpoint(
    workspace_a, alice_owner, carol_admin, client_for, fake
):
    credential = credential_create(
        workspace=workspace_a,
        acting=membership(workspace_a, carol_admin),
        name="embeddings",
        provider="openai",
        base_url=fake.base_url,
        api_key="sk-test",
    )
    kb = faq_kb(
        workspace_a,
        alice_owner,
        client_for(alice_owner),
        embedding_credential_id=credential.pk,
        embedding_model="fake-embed",
    )
    for mode in ("vector", "hybrid"):
        out, ctx = execute(workspace_a, {"knowledge_base": kb.pk, "mode": mode}, "订单")
        (event,) = ctx.of("on_retrieval")
        assert event["used"] == mode and "notes" not in event
        assert event["hits"][0]["document"] == "订单状态.txt"
    out, _ = execute(
        workspace_a,
        {"knowledge_base": kb.pk, "mode": "vector", "filter": {"documents": ["电子发票.txt"]}},
        "订单",
    )
    assert {d.metadata["title"] for d in out["documents"]} == {"电子发票.txt"}


def test_vector_mode_without_embeddings_is_refused_at_validation(
    workspace_a, alice_owner, client_for
):
    kb = make_kb(workspace_a, alice_owner)
    (problem,) = problems(workspace_a, {"knowledge_base": kb.pk, "mode": "vector"})
    assert problem.field == "mode" and problem.code == "no_embeddings"
    assert "keyword mode" in problem.message
    assert problems(workspace_a, {"knowledge_base": kb.pk, "mode": "hybrid"}) == []


def test_another_workspaces_knowledge_base_is_refused_at_validation_and_execution(
    workspace_a, alice_owner, workspace_b, mallory_owner, client_for
):
    theirs = faq_kb(workspace_b, mallory_owner, client_for(mallory_owner))
    (problem,) = problems(workspace_a, {"knowledge_base": theirs.pk})
    assert problem.code == "knowledge_base_not_found"
    graph = {
        "nodes": [
            {"id": "q", "component": "io.chat_input", "params": {}, "position": {"x": 0, "y": 0}},
            {
                "id": "r",
                "component": "retriever.knowledge",
                "params": {"knowledge_base": theirs.pk},
                "position": {"x": 1, "y": 0},
            },
        ],
        "edges": [{"source": "q", "source_port": "text", "target": "r", "target_port": "query"}],
    }
    found = validate_graph(graph, workspace_a)
    assert [p.code for p in found if p.node_id == "r"] == ["knowledge_base_not_found"]
    # Built for workspace_a (as if validation had been bypassed): the lookup at execution
    # is scoped to the run's workspace and refuses it.
    component = get_component("retriever.knowledge")
    assert component is not None
    params = component.Params.model_validate({"knowledge_base": theirs.pk})
    built = component.build(params, BuildEnv(workspace_a))
    ctx = RecordingContext(workspace_a.pk)
    with pytest.raises(NodeError, match="No such knowledge base"):
        run_component(component, params, built, {"query": "订单"}, ctx)
    assert ctx.of("on_retrieval") == []
    # and a node built for one workspace never runs in another's run
    with pytest.raises(RuntimeError):
        run_component(component, params, built, {"query": "订单"}, RecordingContext(workspace_b.pk))


def test_old_graphs_collection_param_reads_the_knowledge_base_of_that_name(
    workspace_a, alice_owner, client_for
):
    faq_kb(workspace_a, alice_owner, client_for(alice_owner), name="faq")
    component = get_component("docs.corpus")
    assert component is not None
    params = component.Params.model_validate({"collection": "faq"})
    built = component.build(params, BuildEnv(workspace_a))
    out = run_component(component, params, built, {}, RecordingContext(workspace_a.pk))
    assert sorted(d.metadata["title"] for d in out["documents"]) == sorted(FAQ_ZH)
    bm25 = get_component("retriever.bm25")
    assert bm25 is not None
    bm25_params = bm25.Params.model_validate({"k": 1})
    ctx = RecordingContext(workspace_a.pk)
    ranked = run_component(
        bm25, bm25_params, None, {"documents": out["documents"], "query": "订单"}, ctx
    )
    assert [d.metadata["title"] for d in ranked["documents"]] == ["订单状态.txt"]


def test_the_migration_turns_document_collections_into_searchable_knowledge_bases(
    workspace_a, alice_owner
):
    executor = MigrationExecutor(connection)
    before = [("knowledge", "0001_initial"), ("flows", "0002_flow_draft")]
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        Document = apps.get_model("flows", "Document")
        long_text = "。".join(f"第{i}条：订单状态可以在我的订单页面查看" for i in range(80))
        for collection, title, content in [
            ("faq", "Passwords", "Reset your password from the login page."),
            ("faq", "订单", long_text),
            ("faq", "Copy", "Reset your password from the login page."),  # the same text
            ("handbook", "Leave", "Ask your manager two weeks ahead."),
        ]:
            Document.objects.create(
                workspace_id=workspace_a.pk, collection=collection, title=title, content=content
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    bases = {kb.name: kb for kb in KnowledgeBase.objects.filter(workspace=workspace_a)}
    assert set(bases) == {"faq", "handbook"}
    faq = bases["faq"]
    assert sorted(faq.documents.values_list("name", flat=True)) == ["Passwords", "订单"]
    long_doc = faq.documents.get(name="订单")
    assert long_doc.status == "indexed" and long_doc.chunk_count > 1
    assert long_doc.chunking_fingerprint == faq.chunking_fingerprint
    assert Chunk.objects.filter(document=long_doc, searchable=True).count() == long_doc.chunk_count
    from knowledge import retrieval

    hits = retrieval.search(faq, "订单", mode="keyword").hits
    assert hits and hits[0].document == "订单"
    # the stored text is the document's, so a re-index can read it again
    with long_doc.file.open("rb") as handle:
        assert handle.read().decode() == long_text


def test_an_imported_flow_file_leaves_the_exporting_workspaces_knowledge_base_behind(
    workspace_a, alice_owner, workspace_b, mallory_owner
):
    from flows import transfer

    theirs = make_kb(workspace_b, mallory_owner, name="Theirs")
    document = {
        "format": "flowdeck.flow",
        "format_version": 1,
        "name": "RAG",
        "graph": {
            "nodes": [
                {
                    "id": "q",
                    "component": "io.chat_input",
                    "params": {},
                    "position": {"x": 0, "y": 0},
                },
                {
                    "id": "r",
                    "component": "retriever.knowledge",
                    "params": {"knowledge_base": theirs.pk, "mode": "keyword"},
                    "position": {"x": 1, "y": 0},
                },
            ],
            "edges": [
                {"source": "q", "source_port": "text", "target": "r", "target_port": "query"}
            ],
        },
    }
    report = transfer.check_import(workspace_a, document)
    assert [(c["node_id"], c["param"]) for c in report.as_dict()["cleared"]] == [
        ("r", "knowledge_base")
    ]
    assert report.lands_as_draft  # the node needs a knowledge base of this workspace
    node = next(n for n in report.graph["nodes"] if n["id"] == "r")
    assert "knowledge_base" not in node["params"]
