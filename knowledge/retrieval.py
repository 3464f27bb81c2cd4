"""Searching a knowledge base: keyword, vector, or both fused (reciprocal rank fusion).

Used by the search endpoint (the page's "test retrieval" box) and by the retrieval
components. Keyword search reads a BM25 index built once per knowledge-base version
(knowledge.keyword.INDEX_CACHE, keyed by id and version); vector search asks the vector
store (knowledge.vectorstore) with the query's embedding. Every hit is read back from the
knowledge base's own searchable chunks, so another workspace's chunk, or one of a document
still being indexed, is never returned whatever an index holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from knowledge.embeddings import embed_query, embeddings_for_kb
from knowledge.keyword import INDEX_CACHE, KeywordIndex
from knowledge.models import Chunk, KnowledgeBase
from knowledge.vectorstore import NO_FILTER, ChunkFilter, VectorStore, get_store, searchable_chunks

Mode = Literal["keyword", "vector", "hybrid"]
MODES: tuple[str, ...] = ("keyword", "vector", "hybrid")
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al.)
MAX_QUERY_CHARS = 2_000
EXCERPT_CHARS = 300
NO_EMBEDDINGS = (
    "This knowledge base has no embeddings model, so vector search is not available: use "
    "keyword mode, or give it an embeddings credential and model."
)


class RetrievalRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float
    document_id: int
    document: str
    format: str
    page: int | None
    heading: str
    chunk: int  # the chunk's position in its document
    text: str

    def citation(self) -> dict[str, Any]:
        """The `on_retrieval` event's hit (`id`, `title`, `score` kept for older clients)."""
        return {
            "id": self.document_id,
            "title": self.document,
            "score": round(self.score, 4),
            "document_id": self.document_id,
            "document": self.document,
            "page": self.page,
            "chunk": self.chunk,
            "chunk_id": self.chunk_id,
            "heading": self.heading,
            "excerpt": self.text[:EXCERPT_CHARS],
        }


@dataclass
class SearchResult:
    mode: str  # what was asked
    used: str  # what ran (hybrid without embeddings runs keyword)
    hits: list[Hit]
    notes: list[str] = field(default_factory=list)


def keyword_index(kb: KnowledgeBase) -> KeywordIndex:
    """The knowledge base's BM25 index for its current version (built at most once)."""
    # The creation time too: SQLite may hand a deleted knowledge base's id to a new one.
    key = (kb.workspace_id, kb.pk, kb.version, kb.created_at.isoformat())

    def load() -> list[tuple[int, str]]:
        rows = searchable_chunks(kb).values_list("pk", "document__name", "heading", "text")
        return [(pk, f"{name}\n{heading}\n{text}") for pk, name, heading, text in rows.iterator()]

    return INDEX_CACHE.get_or_build(key, load)


def _keyword(
    kb: KnowledgeBase, query: str, k: int, chunk_filter: ChunkFilter
) -> list[tuple[int, float]]:
    index = keyword_index(kb)
    if chunk_filter.empty:
        return index.search(query, k)
    # Filters are applied to a wider candidate list, read back from the rows.
    candidates = index.search(query, max(k * 20, 200))
    allowed = set(
        searchable_chunks(kb, chunk_filter)
        .filter(pk__in=[pk for pk, _ in candidates])
        .values_list("pk", flat=True)
    )
    return [(pk, score) for pk, score in candidates if pk in allowed][:k]


def _vector(
    kb: KnowledgeBase,
    query: str,
    k: int,
    threshold: float | None,
    chunk_filter: ChunkFilter,
    store: VectorStore,
    embedder: Any,
) -> list[tuple[int, float]]:
    client = embedder if embedder is not None else embeddings_for_kb(kb)
    vector = embed_query(client, query)
    return store.search(kb, vector, k, threshold, chunk_filter)


def fuse(rankings: Sequence[Sequence[tuple[int, float]]], k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each list adds 1 / (60 + rank) to an item's score."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (item, _score) in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:k]


def check_mode(kb: KnowledgeBase, mode: str) -> None:
    """Refuse what cannot run: an unknown mode, vector mode without embeddings."""
    if mode not in MODES:
        raise RetrievalRefused("invalid_mode", f"Mode must be one of: {', '.join(MODES)}.")
    if mode == "vector" and not kb.has_embeddings:
        raise RetrievalRefused("no_embeddings", NO_EMBEDDINGS)


def search(
    kb: KnowledgeBase,
    query: str,
    *,
    mode: str = "hybrid",
    k: int = 5,
    threshold: float | None = None,
    chunk_filter: ChunkFilter = NO_FILTER,
    store: VectorStore | None = None,
    embedder: Any = None,
) -> SearchResult:
    """The best `k` chunks of `kb` for `query`.

    `threshold` is a minimum cosine similarity (0..1) for vector hits; keyword hits have
    no common scale and are not held to it. In hybrid mode it filters the vector list
    before fusion. Hybrid without an embeddings model runs keyword (and says so)."""
    check_mode(kb, mode)
    query = (query or "")[:MAX_QUERY_CHARS]
    notes: list[str] = []
    used = mode
    if mode == "hybrid" and not kb.has_embeddings:
        used = "keyword"
        notes.append(
            "Hybrid search ran as keyword search: this knowledge base has no embeddings model."
        )
    if not query.strip():
        return SearchResult(mode, used, [], notes)
    store = store or get_store()
    if used == "keyword":
        ranked = _keyword(kb, query, k, chunk_filter)
    elif used == "vector":
        ranked = _vector(kb, query, k, threshold, chunk_filter, store, embedder)
    else:
        wide = max(k * 4, 20)
        ranked = fuse(
            [
                _keyword(kb, query, wide, chunk_filter),
                _vector(kb, query, wide, threshold, chunk_filter, store, embedder),
            ],
            k,
        )
    return SearchResult(mode, used, hits_for(kb, ranked, chunk_filter), notes)


def hits_for(
    kb: KnowledgeBase, ranked: Sequence[tuple[int, float]], chunk_filter: ChunkFilter = NO_FILTER
) -> list[Hit]:
    """The ranked chunk ids as hits, read from `kb`'s searchable chunks only."""
    rows: dict[int, Chunk] = {
        chunk.pk: chunk
        for chunk in searchable_chunks(kb, chunk_filter)
        .filter(pk__in=[pk for pk, _ in ranked])
        .select_related("document")
        .defer("embedding")
    }
    hits = []
    for pk, score in ranked:
        chunk = rows.get(pk)
        if chunk is None:
            continue
        hits.append(
            Hit(
                chunk_id=pk,
                score=float(score),
                document_id=chunk.document_id,
                document=chunk.document.name,
                format=chunk.document.format,
                page=chunk.page,
                heading=chunk.heading,
                chunk=chunk.index,
                text=chunk.text,
            )
        )
    return hits


def context_text(hits: Sequence[Hit]) -> str:
    """The hits as prompt context, each with its citation: `[1] name, p. 3: text`."""
    parts = []
    for number, hit in enumerate(hits, start=1):
        where = f", p. {hit.page}" if hit.page else ""
        parts.append(f"[{number}] {hit.document}{where}: {hit.text}")
    return "\n\n".join(parts)
