"""Celery tasks: thin wrappers that take ids and call knowledge.ingestion."""

from __future__ import annotations

import logging

from celery import shared_task

from knowledge import ingestion

log = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def ingest_document(document_id: int) -> str:
    """Ingest one document (parse, split, embed, index). A duplicate or late delivery
    finds it leased or done and returns."""
    return ingestion.ingest(int(document_id))


@shared_task(ignore_result=True)
def requeue_stale_documents() -> int:
    """Every few seconds (beat): documents whose worker died mid-ingestion, or whose task
    the broker lost, are queued again."""
    return len(ingestion.requeue_stale())


def dispatch_ingestion(document_id: int) -> None:
    """Send the ingestion task (call it from `on_commit`). A broker that refuses it leaves
    the document queued: the reaper sends it again."""
    try:
        ingest_document.delay(document_id)
    except Exception as exc:
        log.warning("queueing ingestion of knowledge document %s failed: %r", document_id, exc)
