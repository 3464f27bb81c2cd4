"""Retrieval components over the workspace's knowledge bases (knowledge/).

- `retriever.knowledge`: picks a knowledge base by id; keyword, vector or hybrid search
  (reciprocal rank fusion) with top-k, a score threshold and a metadata filter; its
  `on_retrieval` event carries citations (document, page, chunk, score).
- `docs.corpus` and `retriever.bm25`, the older pair: the corpus is now a knowledge base's
  indexed chunks (old graphs name it by `collection`, the knowledge base of that name), and
  BM25 ranks with the tokenizer that segments Chinese (knowledge.keyword), its index built
  once per knowledge-base version.

Components reach the knowledge app only through its selectors and retrieval functions,
always with the run's workspace: a knowledge base of another workspace is refused at
validation and again at execution.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import BaseModel, ConfigDict, Field

from flows.components.base import (
    BuildEnv,
    Component,
    ComponentParams,
    NodeError,
    ParamProblem,
    Port,
    RunContext,
)
from flows.components.util import as_text, run_db

TOKEN_RE = re.compile(r"\w+", re.UNICODE)
COLLECTION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_QUERY_CHARS = 2_000


def knowledge_base_field_schema() -> dict[str, Any]:
    """`json_schema_extra` marking a param as a knowledge base of the workspace (the
    editor shows a picker fed by GET knowledge-bases)."""
    return {"format": "knowledge_base"}


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """The tokenizer before knowledge.keyword (a Chinese clause is one token): kept only so
    the keyword tests can measure the new one against it."""
    return [_stem(t.lower()) for t in TOKEN_RE.findall(text)]


class BM25Retriever(BaseRetriever):
    """A LangChain retriever ranking `docs` with BM25 (knowledge.keyword), fully offline.

    With `cache_key` (the documents are one knowledge base version's chunks) the index is
    built once for that key, not per query."""

    docs: list[LCDocument]
    k: int = 3
    cache_key: tuple[Any, ...] | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun | None = None
    ) -> list[LCDocument]:
        return [doc for doc, _score in self.ranked(query)]

    def ranked(self, query: str) -> list[tuple[LCDocument, float]]:
        from knowledge.keyword import INDEX_CACHE, KeywordIndex

        if not self.docs:
            return []

        def items() -> list[tuple[int, str]]:
            return [
                (i, f"{d.page_content} {d.metadata.get('title', '')}")
                for i, d in enumerate(self.docs)
            ]

        if self.cache_key is not None:
            index = INDEX_CACHE.get_or_build(("bm25", *self.cache_key, len(self.docs)), items)
        else:
            index = KeywordIndex.build(items())
        return [(self.docs[i], score) for i, score in index.search(query[:MAX_QUERY_CHARS], self.k)]


def retrieval_hits(ranked: list[tuple[LCDocument, float]]) -> list[dict[str, Any]]:
    """The `on_retrieval` event's hits (runs/events.py) for ranked LangChain documents."""
    return [
        {
            "id": doc.metadata.get("document_id"),
            "title": doc.metadata.get("title", ""),
            "score": round(score, 4),
            "document_id": doc.metadata.get("document_id"),
            "document": doc.metadata.get("title", ""),
            "page": doc.metadata.get("page"),
            "chunk": doc.metadata.get("chunk"),
        }
        for doc, score in ranked
    ]


class DocumentSet:
    """Documents travelling along a `documents` edge. Iterable like a list; its event form
    (`model_dump`) is a short summary, so a large corpus does not bloat the run log."""

    def __init__(self, docs: list[LCDocument], cache_key: tuple[Any, ...] | None = None) -> None:
        self.docs = list(docs)
        self.cache_key = cache_key

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


# --- resolving a knowledge base -------------------------------------------------------------
@dataclass(frozen=True)
class KnowledgeRef:
    """Which knowledge base a node reads, bound at build time to the run's workspace: by id
    (the picker), else by name (old graphs' `collection`)."""

    workspace_id: int
    kb_id: int | None
    name: str | None

    def resolve(self) -> Any:
        """The knowledge base, looked up in this workspace only; None when a collection name
        names none (an empty corpus, as before)."""
        from accounts.models import Workspace
        from knowledge import selectors

        workspace = Workspace.objects.get(pk=self.workspace_id)
        if self.kb_id is not None:
            kb = selectors.knowledge_base_by_id(workspace, self.kb_id)
            if kb is None:
                raise NodeError("No such knowledge base in this workspace.")
            return kb
        return selectors.knowledge_base_named(workspace, self.name or "default")


def knowledge_base_problems(env: BuildEnv, kb_id: int | None) -> tuple[Any, list[ParamProblem]]:
    if kb_id is None:
        return None, []
    from knowledge import selectors

    kb = selectors.knowledge_base_by_id(env.workspace, kb_id)
    if kb is None:
        return None, [
            ParamProblem(
                "knowledge_base",
                "knowledge_base_not_found",
                "No such knowledge base in this workspace.",
            )
        ]
    return kb, []


@dataclass(frozen=True)
class CorpusLoader:
    """Loads the indexed chunks of one knowledge base of one workspace (bound at build time)."""

    ref: KnowledgeRef
    limit: int

    @property
    def workspace_id(self) -> int:
        return self.ref.workspace_id

    def load(self) -> DocumentSet:
        from knowledge.vectorstore import searchable_chunks

        kb = self.ref.resolve()
        if kb is None:
            return DocumentSet([])
        rows = (
            searchable_chunks(kb)
            .select_related("document")
            .defer("embedding")
            .order_by("document_id", "index")[: self.limit]
        )
        docs = [
            LCDocument(
                page_content=row.text,
                metadata={
                    "title": row.document.name,
                    "document_id": row.document_id,
                    "collection": kb.name,
                    "knowledge_base": kb.pk,
                    "page": row.page,
                    "chunk": row.index,
                },
            )
            for row in rows
        ]
        created = kb.created_at.isoformat()
        return DocumentSet(
            docs, cache_key=(kb.workspace_id, kb.pk, kb.version, created, self.limit)
        )


class CorpusParams(ComponentParams):
    collection: str = Field(
        "default",
        pattern=COLLECTION_PATTERN,
        description="Older graphs: the knowledge base of this name (use knowledge_base).",
    )
    knowledge_base: int | None = Field(
        None,
        ge=1,
        description="The knowledge base to read (its indexed chunks).",
        json_schema_extra=knowledge_base_field_schema(),
    )
    max_documents: int = Field(500, ge=1, le=5_000)


class DocsCorpus(Component[CorpusParams]):
    key = "docs.corpus"
    label = "Document corpus"
    category = "Retrieval"
    description = "The indexed text of one of this workspace's knowledge bases."
    inputs = []
    outputs = [Port("documents", "documents", label="Documents")]
    Params = CorpusParams

    def check(self, params: CorpusParams, env: BuildEnv) -> list[ParamProblem]:
        return knowledge_base_problems(env, params.knowledge_base)[1]

    def build(self, params: CorpusParams, env: BuildEnv) -> CorpusLoader:
        p = params
        return CorpusLoader(
            KnowledgeRef(env.workspace_id, p.knowledge_base, p.collection), p.max_documents
        )

    async def execute(
        self, built: Any, params: CorpusParams, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        if built.workspace_id != ctx.workspace_id:
            raise RuntimeError("corpus built for another workspace")
        return {"documents": await run_db(built.load)}


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
        arriving = inputs.get("documents") or []
        docs = [d for d in arriving if isinstance(d, LCDocument)]
        cache_key = arriving.cache_key if isinstance(arriving, DocumentSet) else None
        query = as_text(inputs.get("query"))
        retriever = BM25Retriever(docs=docs, k=params.k, cache_key=cache_key)
        # Indexing is pure Python proportional to the corpus: in a thread, not on the run loop.
        ranked = await asyncio.to_thread(retriever.ranked, query)
        ctx.emit(
            "on_retrieval",
            {"query": query[:500], "mode": "keyword", "hits": retrieval_hits(ranked)},
        )
        top = [doc for doc, _ in ranked]
        context = "\n\n".join(f"{d.metadata.get('title', '')}: {d.page_content}" for d in top)
        return {"documents": top, "context": context}


# --- retriever.knowledge ------------------------------------------------------------------------
class KnowledgeFilter(BaseModel):
    """Which chunks may answer: a fixed set of keys, no expressions."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    documents: list[str] = Field(
        default_factory=list, max_length=100, description="Document names."
    )
    formats: list[Literal["pdf", "docx", "html", "markdown", "text", "csv"]] = Field(
        default_factory=list, max_length=6
    )
    page_from: int | None = Field(None, ge=1, le=1_000_000)
    page_to: int | None = Field(None, ge=1, le=1_000_000)


class KnowledgeParams(ComponentParams):
    knowledge_base: int = Field(
        ...,
        ge=1,
        description="A knowledge base of this workspace.",
        json_schema_extra=knowledge_base_field_schema(),
    )
    mode: Literal["keyword", "vector", "hybrid"] = Field(
        "hybrid", description="Hybrid fuses keyword and vector ranks (reciprocal rank fusion)."
    )
    top_k: int = Field(4, ge=1, le=50)
    score_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Minimum cosine similarity of vector hits."
    )
    filter: KnowledgeFilter = Field(default_factory=KnowledgeFilter)


@dataclass(frozen=True)
class KnowledgeSearch:
    ref: KnowledgeRef
    mode: str
    k: int
    threshold: float | None
    chunk_filter: Any

    @property
    def workspace_id(self) -> int:
        return self.ref.workspace_id

    def run(self, query: str) -> Any:
        from knowledge import retrieval
        from knowledge.embeddings import EmbeddingError

        kb = self.ref.resolve()
        try:
            return retrieval.search(
                kb,
                query,
                mode=self.mode,
                k=self.k,
                threshold=self.threshold,
                chunk_filter=self.chunk_filter,
            )
        except retrieval.RetrievalRefused as exc:
            raise NodeError(exc.message) from exc
        except EmbeddingError as exc:
            raise NodeError(exc.message) from exc


class KnowledgeRetriever(Component[KnowledgeParams]):
    key = "retriever.knowledge"
    label = "Knowledge retrieval"
    category = "Retrieval"
    description = (
        "Searches a knowledge base (keyword, vector or hybrid) and gives the best passages "
        "with their citations."
    )
    inputs = [Port("query", "any", label="Query")]
    outputs = [
        Port("documents", "documents", label="Passages"),
        Port("context", "text", label="Context with citations"),
    ]
    Params = KnowledgeParams

    def check(self, params: KnowledgeParams, env: BuildEnv) -> list[ParamProblem]:
        from knowledge.retrieval import NO_EMBEDDINGS

        p = params
        kb, problems = knowledge_base_problems(env, p.knowledge_base)
        if kb is not None and p.mode == "vector" and not kb.has_embeddings:
            problems.append(ParamProblem("mode", "no_embeddings", NO_EMBEDDINGS))
        return problems

    def build(self, params: KnowledgeParams, env: BuildEnv) -> KnowledgeSearch:
        from knowledge.vectorstore import ChunkFilter

        p = params
        return KnowledgeSearch(
            KnowledgeRef(env.workspace_id, p.knowledge_base, None),
            p.mode,
            p.top_k,
            p.score_threshold,
            ChunkFilter(
                documents=tuple(p.filter.documents),
                formats=tuple(p.filter.formats),
                page_from=p.filter.page_from,
                page_to=p.filter.page_to,
            ),
        )

    async def execute(
        self, built: Any, params: KnowledgeParams, inputs: dict[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        from knowledge.retrieval import context_text

        if built.workspace_id != ctx.workspace_id:
            raise RuntimeError("retriever built for another workspace")
        query = as_text(inputs.get("query"))[:MAX_QUERY_CHARS]
        result = await run_db(built.run, query)
        event: dict[str, Any] = {
            "query": query[:500],
            "mode": result.mode,
            "used": result.used,
            "hits": [hit.citation() for hit in result.hits],
        }
        if result.notes:
            event["notes"] = result.notes
        ctx.emit("on_retrieval", event)
        documents = [
            LCDocument(
                page_content=hit.text,
                metadata={
                    "title": hit.document,
                    "document_id": hit.document_id,
                    "page": hit.page,
                    "chunk": hit.chunk,
                    "score": hit.score,
                },
            )
            for hit in result.hits
        ]
        return {"documents": DocumentSet(documents), "context": context_text(result.hits)}
