"""`manage.py bench_knowledge`: ingestion throughput and retrieval latency of knowledge bases.

Against the configured database (PostgreSQL with pgvector for the vector numbers) and the
fake OpenAI-compatible embeddings endpoint (tests/fakes/fake_openai.py) run in a process
of its own, as a real endpoint is never inside the worker (in this process it would share
the GIL with the ingestion it serves):

- **ingestion**: a `--pages`-page PDF uploaded and ingested into a new knowledge base
  (parse, split, embed in batches, index): pages/s and chunks/s; and the endpoint's own
  throughput: the same chunks embedded in the same batches with the same number of
  requests in flight (`EMBED_CONCURRENCY`) and nothing else around them, so the ratio
  says how much of the endpoint's speed ingestion keeps. Once per `--latencies` value:
  the fake answering at once (bound by the CPU this machine shares with everything else)
  and answering after a delay, as a hosted API does. Each time a second PDF of as many
  pages then goes into the now indexed knowledge base (its vectors are inserted into the
  index rather than building it);
- **retrieval** at `--chunks` chunks in one knowledge base (bulk-inserted with the fake
  endpoint's vectors, then its partial HNSW index built): p50/p99 of `--queries` queries
  for vector search through the vector store, the same query as raw SQL on the same index
  in the same run (the limit), hybrid search (keyword + vector fused), and keyword search
  (BM25, its index built once, reported apart). Query vectors are computed first, so HTTP
  is not in the retrieval numbers. `--chunks 0` skips it.

Prints a table, writes JSON to bench-results/bench_knowledge.json, and deletes everything
it created (also when interrupted).
"""

from __future__ import annotations

import json
import random
import secrets
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from accounts.models import Membership, User, Workspace
from accounts.services import workspace_create
from devtools.management.commands.bench_stream import fake_server
from flows.services import credential_create
from knowledge import ingestion, retrieval
from knowledge.embeddings import embed_documents, embeddings_for_kb
from knowledge.keyword import INDEX_CACHE
from knowledge.models import Chunk, KnowledgeBase, KnowledgeDocument
from knowledge.parsing import parse_file
from knowledge.services import document_upload, kb_create
from knowledge.splitting import content_hash, split_sections
from knowledge.vectorstore import PgVectorStore, hnsw_index_name
from tests.fakes.fake_openai import fake_embedding
from tests.knowledge_files import make_pdf

WORDS = [
    "refund",
    "order",
    "invoice",
    "delivery",
    "account",
    "password",
    "shipping",
    "return",
    "policy",
    "warranty",
    "payment",
    "card",
    "address",
    "profile",
    "discount",
    "coupon",
    "support",
    "ticket",
    "export",
    "import",
    "report",
    "订单",
    "状态",
    "物流",
    "退款",
    "发票",
    "密码",
    "配送",
    "地址",
    "优惠",
    "客服",
    "会员",
    "积分",
    "售后",
    "保修",
    "支付",
    "账户",
]


def bench_pdf(pages: int, *, seed: int) -> bytes:
    """A PDF of `pages` pages of 30 lines of words each (about four chunks a page)."""
    rng = random.Random(seed)
    return make_pdf(
        [
            "\n".join(" ".join(rng.choices(WORDS[:24], k=12)) + "." for _ in range(30))
            for _ in range(pages)
        ]
    )


def endpoint_alone(client: Any, texts: list[str]) -> float:
    """Seconds the endpoint takes to embed `texts` in ingestion's batches with as many
    requests in flight as ingestion keeps, nothing else around them."""
    config = settings.FLOWDECK_KNOWLEDGE
    batch, concurrency = config["EMBED_BATCH"], config["EMBED_CONCURRENCY"]
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda part: embed_documents(client, part), batches))
    return time.perf_counter() - start


class StaticEmbedder:
    """Answers `embed_query` from vectors computed before the timing starts."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def embed_query(self, text: str) -> list[float]:
        return self.vectors[text]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"p50": statistics.median(ordered) * 1000, "p99": p99 * 1000}


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


class Command(BaseCommand):
    help = "Knowledge bases: ingestion throughput and retrieval latency (see the module doc)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pages", type=int, default=500)
        parser.add_argument(
            "--latencies",
            default="0,0.2",
            help="seconds the fake endpoint takes per request, one ingestion each",
        )
        parser.add_argument("--chunks", type=int, default=100_000)
        parser.add_argument("--queries", type=int, default=200)
        parser.add_argument("--dims", type=int, default=64)
        parser.add_argument("--k", type=int, default=10)

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("bench_knowledge measures pgvector: set DATABASE_URL to PostgreSQL.")
        tag = secrets.token_hex(4)
        user = User.objects.create_user(f"bench-{tag}@bench.invalid", None)
        workspace = workspace_create(name=f"bench {tag}", slug=f"bench-{tag}", owner=user)
        acting = Membership.objects.get(workspace=workspace, user=user)
        latencies = [float(x) for x in str(options["latencies"]).split(",") if x.strip()]
        results: dict[str, Any] = {
            "options": {k: options[k] for k in ("pages", "chunks", "queries", "dims", "k")}
            | {"latencies": latencies},
            "ingestion": [],
        }
        try:
            for number, latency in enumerate(latencies):
                with fake_server(
                    "tests.fakes.fake_openai",
                    "--embedding-dimensions",
                    str(options["dims"]),
                    "--embed-delay",
                    str(latency),
                ) as base_url:
                    credential = credential_create(
                        workspace=workspace,
                        acting=acting,
                        name=f"bench {number}",
                        provider="openai",
                        base_url=base_url,
                        api_key="sk-bench",
                    )
                    results["ingestion"].append(
                        self._ingestion(workspace, acting, credential.pk, options, latency)
                    )
                    if number == 0 and options["chunks"] > 0:
                        results["retrieval"] = self._retrieval(
                            workspace, acting, credential.pk, options
                        )
        finally:
            self._cleanup(workspace, user)
        self._report(results)

    # --- ingestion --------------------------------------------------------------------------
    def _ingestion(
        self,
        workspace: Workspace,
        acting: Membership,
        credential_id: int,
        options: dict[str, Any],
        latency: float,
    ) -> dict[str, Any]:
        pages = options["pages"]
        kb = kb_create(
            workspace=workspace,
            acting=acting,
            name=f"ingestion {latency}",
            embedding_credential_id=credential_id,
            embedding_model="fake-embed",
        )
        pdf = bench_pdf(pages, seed=1)
        self.stdout.write(
            f"ingesting a {pages}-page PDF ({len(pdf) / 1e6:.1f} MB), endpoint latency "
            f"{latency * 1000:.0f} ms…"
        )
        first = self._ingest_one(workspace, acting, kb, pdf, "bench.pdf")
        start = time.perf_counter()
        parsed = parse_file("bench.pdf", pdf)
        split_sections(parsed.sections, chunk_size=kb.chunk_size, chunk_overlap=kb.chunk_overlap)
        result = {
            "latency_s": latency,
            "concurrency": settings.FLOWDECK_KNOWLEDGE["EMBED_CONCURRENCY"],
            **first,
            "parse_split_seconds": time.perf_counter() - start,
        }
        self.stdout.write("ingesting a second one into the now indexed knowledge base…")
        result["second"] = self._ingest_one(
            workspace, acting, kb, bench_pdf(pages, seed=3), "more.pdf"
        )
        return result

    def _ingest_one(
        self, workspace: Workspace, acting: Membership, kb: KnowledgeBase, pdf: bytes, name: str
    ) -> dict[str, Any]:
        """Ingest `pdf` into `kb`, then embed its chunks again as the endpoint alone."""
        upload = document_upload(
            workspace=workspace,
            acting=acting,
            kb=kb,
            name=name,
            data=ContentFile(pdf, name=name),
            dispatch=False,
        )
        embeddings_for_kb(kb)  # the client's modules imported before timing, as in a worker
        start = time.perf_counter()
        outcome = ingestion.ingest(upload.document.pk)
        seconds = time.perf_counter() - start
        document = KnowledgeDocument.objects.get(pk=upload.document.pk)
        if outcome != "indexed":
            raise CommandError(f"ingestion ended {outcome}: {document.error_message}")
        chunks = list(
            Chunk.objects.filter(document=document).order_by("index").values_list("text", flat=True)
        )
        kb.refresh_from_db()
        endpoint_seconds = endpoint_alone(embeddings_for_kb(kb), chunks)
        return {
            "pages": document.pages,
            "chunks": document.chunk_count,
            "seconds": seconds,
            "pages_per_s": (document.pages or 0) / seconds,
            "chunks_per_s": document.chunk_count / seconds,
            "endpoint_chunks_per_s": len(chunks) / endpoint_seconds,
            "ratio_to_endpoint": (document.chunk_count / seconds)
            / (len(chunks) / endpoint_seconds),
        }

    # --- retrieval --------------------------------------------------------------------------
    def _retrieval(
        self, workspace: Workspace, acting: Membership, credential_id: int, options: dict[str, Any]
    ) -> dict[str, Any]:
        total, dims, k, queries = (
            options["chunks"],
            options["dims"],
            options["k"],
            options["queries"],
        )
        kb = kb_create(
            workspace=workspace,
            acting=acting,
            name="retrieval",
            embedding_credential_id=credential_id,
            embedding_model="fake-embed",
            embedding_dimensions=dims,
        )
        document = KnowledgeDocument.objects.create(
            workspace=workspace,
            knowledge_base=kb,
            name="corpus.txt",
            format="text",
            content_hash=secrets.token_hex(32),
            status="indexed",
            chunking_fingerprint=kb.chunking_fingerprint,
            embedding_fingerprint=kb.embedding_fingerprint,
        )
        rng = random.Random(2)
        self.stdout.write(f"inserting {total:,} chunks…")
        start = time.perf_counter()
        batch: list[Chunk] = []
        for i in range(total):
            text = " ".join(rng.choices(WORDS, k=16))
            batch.append(
                Chunk(
                    workspace=workspace,
                    knowledge_base=kb,
                    document=document,
                    index=i,
                    text=text,
                    content_hash=content_hash(text),
                    embedding=fake_embedding(text, dims),
                    searchable=True,
                )
            )
            if len(batch) == 5000:
                Chunk.objects.bulk_create(batch)
                batch = []
        Chunk.objects.bulk_create(batch)
        KnowledgeDocument.objects.filter(pk=document.pk).update(chunk_count=total)
        insert_seconds = time.perf_counter() - start
        self.stdout.write("building the HNSW index…")
        start = time.perf_counter()
        store = PgVectorStore()
        store.ensure_index(kb)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE knowledge_chunk")
        index_seconds = time.perf_counter() - start

        texts = [" ".join(rng.choices(WORDS, k=3)) for _ in range(queries)]
        vectors = {text: fake_embedding(text, dims) for text in texts}
        embedder = StaticEmbedder(vectors)
        cycle = iter(texts * 1000)
        raw_sql = (
            f"SELECT id FROM knowledge_chunk WHERE knowledge_base_id = {int(kb.pk)} "  # noqa: S608 (ints)
            f"AND searchable ORDER BY embedding::vector({dims}) <=> %s::vector LIMIT {int(k)}"
        )

        def raw() -> None:
            with connection.cursor() as cursor:
                cursor.execute(raw_sql, ["[" + ",".join(map(str, vectors[next(cycle)])) + "]"])
                cursor.fetchall()

        def vector_store() -> None:
            store.search(kb, vectors[next(cycle)], k)

        def vector_search() -> None:
            retrieval.search(kb, next(cycle), mode="vector", k=k, store=store, embedder=embedder)

        def hybrid() -> None:
            retrieval.search(kb, next(cycle), mode="hybrid", k=k, store=store, embedder=embedder)

        def keyword() -> None:
            retrieval.search(kb, next(cycle), mode="keyword", k=k, store=store)

        with connection.cursor() as cursor:  # the plan, for the record
            cursor.execute("EXPLAIN " + raw_sql, ["[" + ",".join(["0.1"] * dims) + "]"])
            plan = "\n".join(row[0] for row in cursor.fetchall())
        if hnsw_index_name(kb.pk) not in plan:
            self.stderr.write(f"warning: the raw query is not planned on the HNSW index:\n{plan}")
        start = time.perf_counter()
        retrieval.keyword_index(kb)
        keyword_build = time.perf_counter() - start
        for fn in (raw, vector_store, vector_search, hybrid, keyword):  # warm up
            for _ in range(10):
                fn()
        measured: dict[str, Any] = {}
        # Interleaved rounds, so a noisy moment of this shared machine hits every kind.
        samples: dict[str, list[float]] = {
            name: [] for name in ("raw_sql", "vector_store", "vector", "hybrid", "keyword")
        }
        rounds = 4
        for _ in range(rounds):
            samples["raw_sql"] += timed(raw, queries // rounds)
            samples["vector_store"] += timed(vector_store, queries // rounds)
            samples["vector"] += timed(vector_search, queries // rounds)
            samples["hybrid"] += timed(hybrid, queries // rounds)
            samples["keyword"] += timed(keyword, queries // rounds)
        for name, values in samples.items():
            measured[name] = percentiles(values)
        INDEX_CACHE.clear()
        return {
            "chunks": total,
            "insert_seconds": insert_seconds,
            "index_seconds": index_seconds,
            "keyword_index_build_seconds": keyword_build,
            "latency_ms": measured,
            "vector_p99_over_raw": measured["vector"]["p99"] / measured["raw_sql"]["p99"],
            "plan": plan,
        }

    # --- output -----------------------------------------------------------------------------
    def _cleanup(self, workspace: Workspace, user: User) -> None:
        for kb in KnowledgeBase.objects.filter(workspace=workspace):
            PgVectorStore().drop_knowledge_base(kb.pk)
            for document in KnowledgeDocument.objects.filter(knowledge_base=kb).exclude(file=""):
                document.file.delete(save=False)
        Chunk.objects.filter(workspace=workspace).delete()
        workspace.delete()
        user.delete()

    def _report(self, results: dict[str, Any]) -> None:
        runs = results["ingestion"]
        first = runs[0]

        def row(label: str, cell: Callable[[dict[str, Any]], str]) -> str:
            return f"| {label} | " + " | ".join(cell(run) for run in runs) + " |"

        lines = [
            "",
            "| ingestion, fake endpoint in its own process, "
            f"{first['concurrency']} requests in flight | "
            + " | ".join(f"endpoint latency {run['latency_s'] * 1000:.0f} ms" for run in runs)
            + " |",
            "| --- |" + " --- |" * len(runs),
            row(
                f"{first['pages']}-page PDF, {first['chunks']:,} chunks, new knowledge base",
                lambda run: f"{run['seconds']:.2f} s",
            ),
            row("pages/s", lambda run: f"{run['pages_per_s']:.0f}"),
            row("chunks/s", lambda run: f"{run['chunks_per_s']:.0f}"),
            row(
                "the endpoint alone (same batches, same requests in flight), chunks/s",
                lambda run: f"{run['endpoint_chunks_per_s']:.0f}",
            ),
            row("**ingestion / endpoint**", lambda run: f"**{run['ratio_to_endpoint']:.2f}**"),
            row(
                "a second PDF into the indexed knowledge base: chunks/s, / endpoint",
                lambda run: (
                    f"{run['second']['chunks_per_s']:.0f}, {run['second']['ratio_to_endpoint']:.2f}"
                    if "second" in run
                    else "–"
                ),
            ),
            row(
                "parsing and splitting alone (pypdf)",
                lambda run: f"{run['parse_split_seconds']:.2f} s",
            ),
        ]
        self.stdout.write("\n".join(lines))
        if "retrieval" in results:
            self._report_retrieval(results)
        out = Path(settings.BASE_DIR) / "bench-results"
        out.mkdir(exist_ok=True)
        (out / "bench_knowledge.json").write_text(json.dumps(results, indent=2, default=str))

    def _report_retrieval(self, results: dict[str, Any]) -> None:
        ret = results["retrieval"]
        lines = [
            "",
            f"| retrieval at {ret['chunks']:,} chunks (k={results['options']['k']}) | p50 ms | p99 ms |",
            "| --- | --- | --- |",
        ]
        labels = {
            "raw_sql": "raw SQL on the HNSW index (the limit)",
            "vector_store": "vector store (pgvector, ORM)",
            "vector": "vector search (store + rows)",
            "hybrid": "hybrid (keyword + vector, RRF)",
            "keyword": "keyword (BM25, index built)",
        }
        for name, label in labels.items():
            value = ret["latency_ms"][name]
            lines.append(f"| {label} | {value['p50']:.2f} | {value['p99']:.2f} |")
        lines += [
            "",
            f"vector p99 / raw p99: {ret['vector_p99_over_raw']:.2f}; HNSW build "
            f"{ret['index_seconds']:.1f} s; keyword index build {ret['keyword_index_build_seconds']:.2f} s",
        ]
        self.stdout.write("\n".join(lines))
