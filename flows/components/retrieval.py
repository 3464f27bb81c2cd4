"""docs.corpus (the workspace's uploaded text documents) and retriever.bm25 over them."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import Field
from rank_bm25 import BM25Okapi

from flows.components.base import BuildEnv, Component, ComponentParams, Port, RunContext
from flows.components.util import as_text, run_db

TOKEN_RE = re.compile(r"\w+", re.UNICODE)
COLLECTION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_QUERY_CHARS = 2_000


def _stem(word: str) -> str:
    """A light plural stemmer (refunds -> refund), enough for FAQ-style matching."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    return [_stem(t.lower()) for t in TOKEN_RE.findall(text)]


class BM25Retriever(BaseRetriever):
    """A LangChain retriever ranking `docs` with Okapi BM25 (rank_bm25), fully offline."""

    docs: list[LCDocument]
    k: int = 3

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun | None = None
    ) -> list[LCDocument]:
        return [doc for doc, _score in self.ranked(query)]

    def ranked(self, query: str) -> list[tuple[LCDocument, float]]:
        if not self.docs:
            return []
        terms = tokenize(query[:MAX_QUERY_CHARS])
        if not terms:
            return []
        corpus = [
            tokenize(d.page_content + " " + str(d.metadata.get("title", ""))) for d in self.docs
        ]
        scores = BM25Okapi([c or [""] for c in corpus]).get_scores(terms)
        matched = [
            (doc, float(score), i)
            for i, (doc, score, words) in enumerate(zip(self.docs, scores, corpus, strict=True))
            if set(terms) & set(words)
        ]
        matched.sort(key=lambda item: (-item[1], item[2]))
        return [(doc, score) for doc, score, _ in matched[: self.k]]


def retrieval_hits(ranked: list[tuple[LCDocument, float]]) -> list[dict[str, Any]]:
    """The `on_retrieval` event's hits (runs/events.py): {id, title, score} per document."""
    return [
        {
            "id": doc.metadata.get("document_id"),
            "title": doc.metadata.get("title", ""),
            "score": round(score, 4),
        }
        for doc, score in ranked
    ]


class DocumentSet:
    """Documents travelling along a `documents` edge. Iterable like a list; its event form
    (`model_dump`) is a short summary, so a large corpus does not bloat the run log."""

    def __init__(self, docs: list[LCDocument]) -> None:
        self.docs = list(docs)

    def __iter__(self) -> Any:
        return iter(self.docs)

    def __len__(self) -> int:
        return len(self.docs)

    def model_dump(self) -> dict[str, Any]:
        return {
            "count": len(self.docs),
            "titles": [d.metadata.get("title", "") for d in self.docs[:20]],
        }

    def __str__(self) -> str:
        titles = ", ".join(d.metadata.get("title", "") for d in self.docs[:20])
        return f"{len(self.docs)} documents: {titles}"


@dataclass(frozen=True)
class CorpusLoader:
    """Loads one collection of one workspace's documents (bound at build time)."""

    workspace_id: int
    collection: str
    limit: int

    def load(self) -> list[LCDocument]:
        from flows.models import Document

        rows = Document.objects.filter(
            workspace_id=self.workspace_id, collection=self.collection
        ).order_by("pk")[: self.limit]
        return [
            LCDocument(
                page_content=row.content,
                metadata={"title": row.title, "document_id": row.pk, "collection": row.collection},
            )
            for row in rows
        ]


class CorpusParams(ComponentParams):
    collection: str = Field("default", pattern=COLLECTION_PATTERN)
    max_documents: int = Field(500, ge=1, le=5_000)


class DocsCorpus(Component[CorpusParams]):
    key = "docs.corpus"
    label = "Document corpus"
    category = "Retrieval"
    description = "The text documents uploaded to this workspace, one collection."
    inputs = []
    outputs = [Port("documents", "documents", label="Documents")]
    Params = CorpusParams

    def build(self, params: CorpusParams, env: BuildEnv) -> CorpusLoader:
        return CorpusLoader(env.workspace_id, params.collection, params.max_documents)

    async def execute(
        self, built: Any, params: CorpusParams, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        if built.workspace_id != ctx.workspace_id:
            raise RuntimeError("corpus built for another workspace")
        return {"documents": DocumentSet(await run_db(built.load))}


class Bm25Retriever(Component["Bm25Retriever.Params"]):
    key = "retriever.bm25"
    label = "BM25 retriever"
    category = "Retrieval"
    description = "Ranks documents against the query with BM25 (offline keyword ranking)."
    inputs = [
        Port("documents", "documents", label="Documents"),
        Port("query", "any", label="Query"),
    ]
    outputs = [
        Port("documents", "documents", label="Top documents"),
        Port("context", "text", label="Context text"),
    ]

    class Params(ComponentParams):
        k: int = Field(3, ge=1, le=50)

    def build(self, params: Bm25Retriever.Params, env: BuildEnv) -> Any:
        return None  # the retriever is built per run from the documents that arrive

    async def execute(
        self, built: Any, params: Bm25Retriever.Params, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        docs = [d for d in inputs.get("documents") or [] if isinstance(d, LCDocument)]
        query = as_text(inputs.get("query"))
        retriever = BM25Retriever(docs=docs, k=params.k)
        # Indexing is pure Python proportional to the corpus (up to 5,000 documents): in a
        # thread, where the GIL changes hands every switch interval, not on the run loop.
        ranked = await asyncio.to_thread(retriever.ranked, query)
        ctx.emit("on_retrieval", {"query": query[:500], "hits": retrieval_hits(ranked)})
        top = [doc for doc, _ in ranked]
        context = "\n\n".join(f"{d.metadata.get('title', '')}: {d.page_content}" for d in top)
        return {"documents": top, "context": context}
