"""Knowledge bases of a workspace, their documents and the chunks retrieval searches.

A document's file is kept through Django's storage API (`settings.STORAGES["default"]`:
the data directory on the embedded default, any django-storages backend in production).
Ingestion (knowledge.ingestion) turns a document into chunks, then gives each chunk an
embedding when the knowledge base has an embeddings credential. A chunk is returned by
retrieval only once its whole document is indexed (`searchable`): a half-ingested or failed
document never answers.
"""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.db import models
from pgvector.django import VectorField

from accounts.models import Workspace


class KnowledgeBase(models.Model):
    """A named set of documents of a workspace, with its chunking and embedding settings.

    `version` is bumped whenever its content or settings change: the keyword index of a
    knowledge base is built once per version (knowledge.keyword.IndexCache)."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="knowledge_bases"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=5000)
    chunk_size = models.PositiveIntegerField(default=800)
    chunk_overlap = models.PositiveIntegerField(default=100)
    # No credential: keyword retrieval only (the embedded default, offline).
    embedding_credential = models.ForeignKey(
        "flows.Credential",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    embedding_model = models.CharField(max_length=200, blank=True)
    # Known once the first embedding came back (or set by the user); fixed afterwards
    # until the embedding settings change.
    embedding_dimensions = models.PositiveIntegerField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="knowledgebase_unique_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_embeddings(self) -> bool:
        return self.embedding_credential_id is not None and bool(self.embedding_model)

    @property
    def chunking_fingerprint(self) -> str:
        """What a document's chunks depend on: re-chunk when it changes."""
        return chunking_fingerprint_for(self.chunk_size, self.chunk_overlap)

    @property
    def embedding_fingerprint(self) -> str:
        """What a chunk's embedding depends on: re-embed when it changes ("" = none)."""
        if not self.has_embeddings:
            return ""
        return _fingerprint(
            {"credential": self.embedding_credential_id, "model": self.embedding_model}
        )


def chunking_fingerprint_for(chunk_size: int, chunk_overlap: int) -> str:
    return _fingerprint({"size": chunk_size, "overlap": chunk_overlap})


def _fingerprint(values: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:32]


class DocumentStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    PARSING = "parsing", "Parsing"
    EMBEDDING = "embedding", "Embedding"
    INDEXED = "indexed", "Indexed"
    FAILED = "failed", "Failed"


def document_upload_to(document: KnowledgeDocument, filename: str) -> str:
    # The stored name never comes from the user: the content hash, under the workspace.
    return f"knowledge/{document.workspace_id}/{document.knowledge_base_id}/{document.content_hash}"


class KnowledgeDocument(models.Model):
    """One uploaded file of a knowledge base, and where its ingestion stands.

    The row is the truth about ingestion: a reload of the page shows `status` and
    `progress_done`/`progress_total`; the WebSocket only hurries the news along."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="documents"
    )
    name = models.CharField(max_length=255)
    format = models.CharField(max_length=16)
    size = models.PositiveBigIntegerField(default=0)
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the file's bytes.")
    file = models.FileField(upload_to=document_upload_to, max_length=500, blank=True)
    status = models.CharField(
        max_length=16, choices=DocumentStatus.choices, default=DocumentStatus.QUEUED
    )
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=1000, blank=True)
    pages = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    # The settings the stored chunks / embeddings were made with (KnowledgeBase.*_fingerprint):
    # a re-run keeps what still matches and redoes only the rest.
    chunking_fingerprint = models.CharField(max_length=32, blank=True)
    embedding_fingerprint = models.CharField(max_length=32, blank=True)
    # The worker ingesting it holds a lease it renews between steps; a lease that ran out
    # (the worker was killed) lets the reaper queue the document again, and a worker that
    # lost its lease writes nothing more.
    lease_token = models.CharField(max_length=32, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["knowledge_base", "content_hash"], name="knowledgedocument_unique_hash"
            )
        ]
        indexes = [models.Index(fields=["workspace", "knowledge_base", "status"])]

    def __str__(self) -> str:
        return self.name


class Chunk(models.Model):
    """A piece of a document's text with where it came from (page, heading).

    `embedding` is an untyped pgvector column: knowledge bases use models of different
    dimensions, and each knowledge base's HNSW index is a partial expression index over
    `embedding::vector(D)` (knowledge.vectorstore). On SQLite the column holds the same
    text form and the sqlite-vec table beside it is the index."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, db_index=True, related_name="+"
    )
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="chunks"
    )
    document = models.ForeignKey(KnowledgeDocument, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    text = models.TextField()
    page = models.PositiveIntegerField(null=True, blank=True)
    heading = models.CharField(max_length=500, blank=True)
    content_hash = models.CharField(max_length=64)
    embedding = VectorField(null=True, blank=True)
    # False until the whole document is indexed (and again while it is re-indexed). Also the
    # predicate of the knowledge base's vector index: only searchable chunks are in it.
    searchable = models.BooleanField(default=False)

    class Meta:
        ordering = ["document", "index"]
        constraints = [
            models.UniqueConstraint(fields=["document", "index"], name="chunk_unique_index")
        ]
        indexes = [models.Index(fields=["knowledge_base", "searchable"])]

    def __str__(self) -> str:
        return f"{self.document} #{self.index}"
