"""Ingestion across real processes: uploads through Daphne, ingestion in a Celery worker,
progress over the knowledge WebSocket; a worker killed mid-document whose document
finishes after a restart with no duplicate chunks."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from django.db.models import Count
from django.utils import timezone

from flows.services import credential_create
from knowledge import ingestion, services
from knowledge.models import Chunk, DocumentStatus, KnowledgeDocument
from knowledge.tasks import ingest_document
from ops.processes import worker_command
from tests.conftest import require_services
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.knowledge_files import make_docx, make_pdf
from tests.knowledge_helpers import make_kb, membership
from tests.live import LiveStack, free_port, subprocess_env

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

ORDER = ["queued", "parsing", "embedding", "indexed"]


def wait_for(predicate: Any, timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_uploads_are_ingested_by_the_worker_and_progress_streams_to_a_watcher(
    live_stack: LiveStack, workspace_a, alice_owner, bob_viewer, token_for
):
    kb = make_kb(workspace_a, alice_owner, chunk_size=200, chunk_overlap=20)
    viewer_token = token_for(workspace_a, bob_viewer)
    files = {
        "manual.pdf": make_pdf([f"Page {p}: " + "the refund rule. " * 30 for p in range(1, 6)]),
        "policy.docx": make_docx(["Refunds take five days. " * 40], headings={0: "Refunds"}),
    }

    async def watch_and_upload() -> dict[int, list[str]]:
        seen: dict[int, list[str]] = {}
        async with websockets.connect(
            f"{live_stack.ws_url}/ws/w/acme/knowledge?kb={kb.pk}",
            additional_headers={"Authorization": f"Bearer {viewer_token}"},
            origin=live_stack.http_url,  # type: ignore[arg-type]
            open_timeout=10,
        ) as ws:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert snapshot == {"event": "snapshot", "knowledge_base": kb.pk, "documents": []}
            owner_token = await asyncio.to_thread(token_for, workspace_a, alice_owner)
            async with httpx.AsyncClient(base_url=live_stack.http_url, timeout=30) as client:
                response = await client.post(
                    f"/api/w/acme/knowledge-bases/{kb.pk}/documents",
                    files=[("files", (name, data)) for name, data in files.items()],
                    headers={"Authorization": f"Bearer {owner_token}"},
                )
            assert response.status_code == 201, response.text
            while not (len(seen) == 2 and all(s[-1] == "indexed" for s in seen.values())):
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                assert message["event"] == "document", message
                document = message["document"]
                states = seen.setdefault(document["id"], [])
                if not states or states[-1] != document["status"]:
                    states.append(document["status"])
        return seen

    seen = asyncio.run(watch_and_upload())
    for states in seen.values():
        # In order, each at most once (the layer may drop some; never out of order).
        assert states == sorted(states, key=ORDER.index), states
        assert states[-1] == "indexed"
    documents = KnowledgeDocument.objects.filter(knowledge_base=kb)
    assert {d.name: d.status for d in documents} == {
        "manual.pdf": "indexed",
        "policy.docx": "indexed",
    }
    assert documents.get(name="manual.pdf").pages == 5
    assert Chunk.objects.filter(knowledge_base=kb, searchable=True, page=5).exists()


def test_a_worker_killed_mid_document_finishes_after_a_restart_without_duplicates(
    workspace_a, alice_owner, carol_admin, monkeypatch, tmp_path: Path, settings: Any
):
    require_services(redis=True)
    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    queue = f"{settings.CHANNEL_PREFIX}.knowledge-kill"

    def dispatch(document_id: int) -> None:
        ingest_document.apply_async((document_id,), queue=queue)

    monkeypatch.setattr("knowledge.tasks.dispatch_ingestion", dispatch)
    stack = LiveStack(
        port=free_port(),
        env=subprocess_env(
            FLOWDECK_KNOWLEDGE_LEASE_SECONDS="3",
            FLOWDECK_KNOWLEDGE_EMBED_BATCH="2",
            FLOWDECK_KNOWLEDGE_EMBED_CONCURRENCY="2",
            FLOWDECK_MEDIA_ROOT=str(media),
        ),
    )
    command = worker_command(concurrency=2, name="kworker", heartbeat=False) + ["-Q", queue]
    with FakeOpenAIServer(embed_delay=0.4) as fake:
        credential = credential_create(
            workspace=workspace_a,
            acting=membership(workspace_a, carol_admin),
            name="embeddings",
            provider="openai",
            base_url=fake.base_url,
            api_key="sk-test",
        )
        kb = make_kb(
            workspace_a,
            alice_owner,
            chunk_size=200,
            chunk_overlap=0,
            embedding_credential_id=credential.pk,
            embedding_model="fake-embed",
        )
        try:
            proc = stack._spawn("kworker", command)
            stack._wait_worker_ready("kworker", proc)
            from django.core.files.base import ContentFile

            text = "\n\n".join(
                f"Section {i}: " + "refund rules apply here. " * 6 for i in range(30)
            )
            upload = services.document_upload(
                workspace=workspace_a,
                acting=membership(workspace_a, alice_owner),
                kb=kb,
                name="long.txt",
                data=ContentFile(text.encode(), name="long.txt"),
            )
            document = upload.document

            def embedded() -> int:
                document.refresh_from_db()
                return document.progress_done if document.status == "embedding" else 0

            wait_for(lambda: embedded() >= 4, what="embedding under way")
            stack.kill("kworker")  # SIGKILL, mid-document
            done_at_kill = Chunk.objects.filter(document=document, embedding__isnull=False).count()
            document.refresh_from_db()
            assert document.status == DocumentStatus.EMBEDDING
            assert done_at_kill < document.chunk_count
            fake.embed_delay = 0
            # The lease runs out (3 s here); the reaper queues the document again and a
            # restarted worker resumes it.
            wait_for(
                lambda: (
                    KnowledgeDocument.objects.get(pk=document.pk).lease_expires_at < timezone.now()
                ),
                what="the lease to run out",
            )
            proc = stack._spawn("kworker", command)
            stack._wait_worker_ready("kworker", proc)
            assert ingestion.requeue_stale(dispatch=dispatch) == [document.pk]
            wait_for(
                lambda: KnowledgeDocument.objects.get(pk=document.pk).status == "indexed",
                what="the document to be indexed",
            )
        finally:
            stack.stop()
        document.refresh_from_db()
        chunks = Chunk.objects.filter(document=document)
        assert chunks.count() == document.chunk_count
        duplicates = chunks.values("index").annotate(n=Count("pk")).filter(n__gt=1)
        assert not duplicates.exists()
        assert not chunks.filter(embedding__isnull=True).exists()
        assert not chunks.filter(searchable=False).exists()
        # Resumed, not restarted: what was stored before the kill was not embedded again
        # (at most the batches sent and not stored when the worker died: twice the
        # requests in flight, 2 x 2 batches of 2).
        assert fake.embedded_inputs <= document.chunk_count + 2 * 2 * 2
        assert fake.embedded_inputs >= document.chunk_count
