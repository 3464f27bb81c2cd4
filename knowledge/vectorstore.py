"""The vector store behind one small interface, two implementations.

- PostgreSQL: pgvector through its Django integration. `Chunk.embedding` is an untyped
  `vector` column (knowledge bases use models of different dimensions); each knowledge
  base gets a partial expression HNSW index, `((embedding::vector(D)) vector_cosine_ops)
  WHERE knowledge_base_id = X AND searchable`, and queries use the same cast and the same
  conditions so the planner picks that index (pgvector's documented way to index mixed
  dimensions). Only searchable chunks are in the graph: a vector written during ingestion
  costs no graph insert, each chunk enters the graph once, when its document becomes
  searchable, and taking a document out of retrieval (a re-index, a failure) costs none.
  A knowledge base's first document builds the index over its vectors in one go (several
  times cheaper than inserting them one by one, as pgvector's docs advise for loading);
  later documents insert theirs. (Visibility stays on the chunk row: a condition on the
  document's status would need a join, whose estimated rows shrink with the number of
  documents in the table, and with thousands of them the planner would expect to read the
  whole index for k rows and sort the knowledge base instead.)
- SQLite (the embedded default): sqlite-vec. This CPython's `sqlite3` cannot load
  extensions (built without `enable_load_extension`), so the vectors live in a database
  file of their own beside the main one, opened with APSW (a maintained SQLite wrapper that
  can load extensions; sqlite-vec ships its loadable library in its wheel). One `vec0`
  table per knowledge base (its own dimensions), the chunk id as rowid. The main database's
  `Chunk.embedding` keeps the same vector as text: it is the truth an ingestion resumes
  from, and the vec0 table can be rebuilt from it.

Either way the main database decides what may be returned: a hit is kept only if its chunk
row exists, is `searchable`, belongs to the knowledge base and passes the filter.
"""

from __future__ import annotations

import struct
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Cast
from pgvector import Vector
from pgvector.django import CosineDistance, VectorField

from knowledge.dbext import pgvector_version
from knowledge.models import Chunk, KnowledgeBase

MAX_CANDIDATES = 4096  # sqlite-vec's largest k


@dataclass(frozen=True)
class ChunkFilter:
    """Which chunks a search may return, beyond its knowledge base: a fixed set of keys
    (no user expressions). Empty tuples and None mean "any"."""

    documents: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    document_ids: tuple[int, ...] = ()
    page_from: int | None = None
    page_to: int | None = None

    def q(self) -> Q:
        q = Q()
        if self.documents:
            q &= Q(document__name__in=self.documents)
        if self.formats:
            q &= Q(document__format__in=self.formats)
        if self.document_ids:
            q &= Q(document_id__in=self.document_ids)
        if self.page_from is not None:
            q &= Q(page__gte=self.page_from)
        if self.page_to is not None:
            q &= Q(page__lte=self.page_to)
        return q

    @property
    def empty(self) -> bool:
        return not (
            self.documents
            or self.formats
            or self.document_ids
            or self.page_from is not None
            or self.page_to is not None
        )


NO_FILTER = ChunkFilter()


def searchable_chunks(kb: KnowledgeBase, chunk_filter: ChunkFilter = NO_FILTER) -> QuerySet[Chunk]:
    """The chunks of `kb` retrieval may return (its workspace's, indexed, filtered).
    `searchable` is also the vector index's predicate: naming it lets the planner use it."""
    return Chunk.objects.filter(
        workspace_id=kb.workspace_id, knowledge_base_id=kb.pk, searchable=True
    ).filter(chunk_filter.q())


class VectorStore(Protocol):
    def add(
        self,
        kb: KnowledgeBase,
        items: Sequence[tuple[int, Sequence[float]]],
        *,
        in_rows: bool = False,
    ) -> None:
        """Store each chunk's vector (chunk id, vector); replaces an earlier one. With
        `in_rows`, the chunks' rows were inserted with these vectors already (in the
        caller's transaction): only what the store keeps beside the rows is written."""

    def ensure_index(self, kb: KnowledgeBase) -> None:
        """Bring `kb`'s index up to date for its (known) dimensions and the chunks that are
        searchable now (an index of an older definition is replaced)."""

    def make_searchable(self, kb: KnowledgeBase, document_id: int) -> None:
        """Inside the caller's transaction (the one that marks the document indexed):
        make every chunk of the document searchable, with its vector in `kb`'s index."""

    def index_now(self, kb: KnowledgeBase) -> None:
        """Inside the caller's transaction, before it writes any chunk: give `kb` its index
        now, over its searchable chunks, if it has none (before a long first document
        becomes searchable: its vectors then go into the index one by one, without the
        table lock a build over all of them would hold)."""

    def delete_document(self, kb_id: int, chunk_ids: Sequence[int]) -> None:
        """Forget these chunks' vectors (after their rows were deleted)."""

    def drop_knowledge_base(self, kb_id: int) -> None:
        """Forget the whole index of a knowledge base (deleted, or its dimensions changed)."""

    def search(
        self,
        kb: KnowledgeBase,
        vector: Sequence[float],
        k: int,
        threshold: float | None = None,
        chunk_filter: ChunkFilter = NO_FILTER,
    ) -> list[tuple[int, float]]:
        """The `k` nearest searchable chunks as (chunk id, cosine similarity), best first;
        with `threshold`, only those at least that similar."""


def _similarity(distance: float) -> float:
    return 1.0 - float(distance)


# --- PostgreSQL / pgvector ----------------------------------------------------------------
def hnsw_index_name(kb_id: int) -> str:
    """The name of `kb_id`'s HNSW index (over its searchable chunks)."""
    return f"knowledge_chunk_hnsw_searchable_kb{int(kb_id)}"


def legacy_hnsw_index_name(kb_id: int) -> str:
    """The index of the older definition (every chunk of the knowledge base, searchable or
    not: each vector went into the graph when written and again when its document became
    searchable). `ensure_index` replaces it."""
    return f"knowledge_chunk_hnsw_kb{int(kb_id)}"


def store_in_rows(items: Sequence[tuple[int, Sequence[float]]]) -> None:
    """Write each chunk's vector into its row (`Chunk.embedding`)."""
    if connection.vendor == "postgresql":
        # One UPDATE ... FROM (VALUES ...) per batch: Django's bulk_update writes a CASE
        # per row, several times slower for a batch of vectors.
        for start in range(0, len(items), 500):
            part = items[start : start + 500]
            values = ", ".join(["(%s::bigint, %s::vector)"] * len(part))
            params: list[Any] = []
            for chunk_id, vector in part:
                params += [int(chunk_id), Vector._to_db(list(vector))]
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE knowledge_chunk AS c SET embedding = v.e "  # noqa: S608 (placeholders)
                    f"FROM (VALUES {values}) AS v(id, e) WHERE c.id = v.id",
                    params,
                )
        return
    rows = [Chunk(pk=chunk_id, embedding=list(vector)) for chunk_id, vector in items]
    Chunk.objects.bulk_update(rows, ["embedding"], batch_size=500)


# The graph is built in memory while it fits in maintenance_work_mem, and much more slowly
# once it does not (pgvector's docs): a build gets about this much per vector, its
# dimensions' bytes aside, and never less than the server's own setting.
_BUILD_BYTES_PER_VECTOR = 1024
_BUILD_MEMORY_CAP = 1024**3


class PgVectorStore:
    """pgvector: the column is the store, one partial HNSW index per knowledge base over
    its searchable chunks."""

    def add(
        self,
        kb: KnowledgeBase,
        items: Sequence[tuple[int, Sequence[float]]],
        *,
        in_rows: bool = False,
    ) -> None:
        if items and not in_rows:
            store_in_rows(items)

    def ensure_index(self, kb: KnowledgeBase) -> None:
        dims = int(kb.embedding_dimensions or 0)
        if dims <= 0:
            return
        with transaction.atomic():
            present = _existing_indexes(kb.pk)
            legacy = legacy_hnsw_index_name(kb.pk) in present
            current = hnsw_index_name(kb.pk) in present
            if current and not legacy:
                return
            searchable = Chunk.objects.filter(
                knowledge_base_id=kb.pk, searchable=True, embedding__isnull=False
            ).exists()
            if not legacy and not searchable:
                return  # nothing to index yet: the first document's vectors build it
            _lock_chunks_for_index_change()
            present = _existing_indexes(kb.pk)  # as it is now that ours is the only change
            if searchable and hnsw_index_name(kb.pk) not in present:
                _build_index(kb.pk, dims)
            if legacy_hnsw_index_name(kb.pk) in present:
                # Last, so the table's exclusive lock is held only until the commit.
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP INDEX IF EXISTS {legacy_hnsw_index_name(kb.pk)}")

    def make_searchable(self, kb: KnowledgeBase, document_id: int) -> None:
        rows = Chunk.objects.filter(document_id=document_id, searchable=False)
        dims = int(kb.embedding_dimensions or 0)
        if dims <= 0 or hnsw_index_name(kb.pk) in _existing_indexes(kb.pk):
            rows.update(searchable=True)  # each vector goes into the graph here, once
            return
        # The knowledge base's first searchable vectors: flip, then build the graph over
        # them in one go.
        _lock_chunks_for_index_change()
        rows.update(searchable=True)
        if hnsw_index_name(kb.pk) not in _existing_indexes(kb.pk):
            _build_index(kb.pk, dims)

    def index_now(self, kb: KnowledgeBase) -> None:
        dims = int(kb.embedding_dimensions or 0)
        if dims <= 0 or hnsw_index_name(kb.pk) in _existing_indexes(kb.pk):
            return
        _lock_chunks_for_index_change()
        if hnsw_index_name(kb.pk) not in _existing_indexes(kb.pk):
            _build_index(kb.pk, dims)

    def delete_document(self, kb_id: int, chunk_ids: Sequence[int]) -> None:
        return None  # the rows carried the vectors

    def drop_knowledge_base(self, kb_id: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DROP INDEX IF EXISTS {hnsw_index_name(kb_id)}, {legacy_hnsw_index_name(kb_id)}"
            )

    def search(
        self,
        kb: KnowledgeBase,
        vector: Sequence[float],
        k: int,
        threshold: float | None = None,
        chunk_filter: ChunkFilter = NO_FILTER,
    ) -> list[tuple[int, float]]:
        dims = int(kb.embedding_dimensions or 0)
        if dims <= 0 or len(vector) != dims:
            return []
        distance = CosineDistance(
            Cast("embedding", output_field=VectorField(dimensions=dims)), list(vector)
        )
        query = (
            searchable_chunks(kb, chunk_filter)
            .filter(embedding__isnull=False)
            .annotate(distance=distance)
            .order_by("distance")
            .values_list("pk", "distance")
        )
        if threshold is not None:
            query = query.filter(distance__lte=1.0 - threshold)
        _tune_hnsw(k)
        rows = list(query[:k])
        rows.sort(key=lambda row: (row[1], row[0]))  # relaxed order: sort the k found
        return [(pk, _similarity(d)) for pk, d in rows]


def _existing_indexes(kb_id: int) -> set[str]:
    """Which of `kb_id`'s HNSW index names exist (a catalog lookup, no table lock)."""
    names = [hnsw_index_name(kb_id), legacy_hnsw_index_name(kb_id)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s), to_regclass(%s)", names)
        found = cursor.fetchone()
    return {name for name, oid in zip(names, found, strict=True) if oid is not None}


def _lock_chunks_for_index_change() -> None:
    """Before a transaction builds or drops an index: the table lock those take, taken
    first and self-exclusive, so two such transactions queue rather than deadlock (each
    holding the lock its writes took while waiting for the stronger one). Writes to the
    chunk table wait for the commit; reads go on."""
    with connection.cursor() as cursor:
        # PostgreSQL refuses CREATE INDEX on a table with deferred constraint checks
        # pending in this transaction (rows written just before): run them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("LOCK TABLE knowledge_chunk IN SHARE ROW EXCLUSIVE MODE")


def _build_index(kb_id: int, dims: int) -> None:
    """CREATE INDEX over the knowledge base's searchable vectors (in the caller's
    transaction, after `_lock_chunks_for_index_change`). Integers only reach the statement
    (no user text); HNSW takes at most 2,000 dimensions for `vector` (the service refuses
    more)."""
    count = Chunk.objects.filter(
        knowledge_base_id=kb_id, searchable=True, embedding__isnull=False
    ).count()
    wanted = min(_BUILD_MEMORY_CAP, count * (dims * 4 + _BUILD_BYTES_PER_VECTOR))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setting::bigint * 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'"
        )
        (current,) = cursor.fetchone()
        if wanted > int(current):
            cursor.execute(
                "SELECT set_config('maintenance_work_mem', %s, true)", [f"{wanted // 1024}kB"]
            )
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {hnsw_index_name(kb_id)} ON knowledge_chunk "
            f"USING hnsw ((embedding::vector({int(dims)})) vector_cosine_ops) "
            f"WHERE knowledge_base_id = {int(kb_id)} AND searchable"
        )


_pg_version: dict[str, tuple[int, ...]] = {}
# Raw connections whose session already has the HNSW settings (-> its ef_search).
_tuned: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _tune_hnsw(k: int) -> None:
    """An HNSW scan returns ef_search candidates before the other conditions (searchable,
    the filter) apply; pgvector >= 0.8 scans on until k pass (iterative scan). Set once per
    pooled connection in autocommit (a session setting then outlives the call: no extra
    round trip per query); inside a transaction, for that transaction only (a rollback
    would undo a session setting)."""
    ef = max(40, min(1000, k * 2))
    connection.ensure_connection()
    raw = connection.connection
    in_transaction = connection.in_atomic_block
    if not in_transaction and _tuned.get(raw) == ef:
        return
    local = "true" if in_transaction else "false"
    settings_sql = f"SELECT set_config('hnsw.ef_search', %s, {local})"
    if _iterative_scan_supported():
        settings_sql += f", set_config('hnsw.iterative_scan', 'relaxed_order', {local})"
    with connection.cursor() as cursor:
        cursor.execute(settings_sql, [str(ef)])
    if not in_transaction:
        _tuned[raw] = ef


def _iterative_scan_supported() -> bool:
    alias = connection.alias
    if alias not in _pg_version:
        _pg_version[alias] = pgvector_version(connection)
    return _pg_version[alias] >= (0, 8, 0)


# --- SQLite / sqlite-vec --------------------------------------------------------------------
def sqlite_vec_problem() -> str | None:
    """Why sqlite-vec cannot be loaded here, or None."""
    try:
        conn = _open(":memory:")
        conn.execute("SELECT vec_version()").fetchall()
        conn.close()
    except Exception as exc:
        return (
            f"sqlite-vec cannot be loaded ({exc}); the embedded default needs the `apsw` and "
            "`sqlite-vec` packages (pip install -e .)."
        )
    return None


def _open(path: str) -> Any:
    import apsw
    import sqlite_vec

    conn = apsw.Connection(path)
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    conn.enable_load_extension(False)
    conn.setbusytimeout(20_000)
    return conn


def _pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)


def vectors_path_for_default_database() -> Path:
    """The vectors file beside the main SQLite database (the test database's in tests)."""
    name = Path(str(connection.settings_dict["NAME"]))
    return name.with_name(name.stem + "-vectors.sqlite3")


@dataclass
class SqliteVecStore:
    """sqlite-vec in a database file of its own, one vec0 table per knowledge base."""

    path: Path
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _open(str(self.path))
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    @staticmethod
    def _table(kb_id: int) -> str:
        return f"vec_kb{int(kb_id)}"

    def _exists(self, kb_id: int) -> bool:
        rows = self._conn().execute(
            "SELECT 1 FROM sqlite_master WHERE name = ?", (self._table(kb_id),)
        )
        return rows.fetchone() is not None

    def ensure_index(self, kb: KnowledgeBase) -> None:
        dims = int(kb.embedding_dimensions or 0)
        if dims <= 0:
            return
        self._conn().execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {self._table(kb.pk)} USING "
            f"vec0(embedding float[{dims}] distance_metric=cosine)"
        )

    def add(
        self,
        kb: KnowledgeBase,
        items: Sequence[tuple[int, Sequence[float]]],
        *,
        in_rows: bool = False,
    ) -> None:
        if not items:
            return
        self.ensure_index(kb)
        table = self._table(kb.pk)
        conn = self._conn()
        with conn:  # one transaction; vec0 has no upsert: delete, then insert
            ids = [int(chunk_id) for chunk_id, _ in items]
            conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", [(i,) for i in ids])  # noqa: S608 (an int)
            conn.executemany(
                f"INSERT INTO {table}(rowid, embedding) VALUES (?, ?)",  # noqa: S608 (an int)
                [(int(chunk_id), _pack(vector)) for chunk_id, vector in items],
            )
        # Written second (or committed second, with `in_rows`): a vector in the main
        # database means it is in vec0 too, so a resumed ingestion never skips one that
        # vec0 lacks.
        if not in_rows:
            store_in_rows(items)

    def make_searchable(self, kb: KnowledgeBase, document_id: int) -> None:
        # vec0 holds every vector already; the rows decide what a search may return.
        Chunk.objects.filter(document_id=document_id, searchable=False).update(searchable=True)

    def index_now(self, kb: KnowledgeBase) -> None:
        self.ensure_index(kb)  # vec0 takes every vector as it is stored

    def delete_document(self, kb_id: int, chunk_ids: Sequence[int]) -> None:
        if not chunk_ids or not self._exists(kb_id):
            return
        conn = self._conn()
        with conn:
            conn.executemany(
                f"DELETE FROM {self._table(kb_id)} WHERE rowid = ?",  # noqa: S608 (an int)
                [(int(i),) for i in chunk_ids],
            )

    def drop_knowledge_base(self, kb_id: int) -> None:
        self._conn().execute(f"DROP TABLE IF EXISTS {self._table(kb_id)}")

    def search(
        self,
        kb: KnowledgeBase,
        vector: Sequence[float],
        k: int,
        threshold: float | None = None,
        chunk_filter: ChunkFilter = NO_FILTER,
    ) -> list[tuple[int, float]]:
        dims = int(kb.embedding_dimensions or 0)
        if dims <= 0 or len(vector) != dims or not self._exists(kb.pk):
            return []
        wanted = max(k * 4, 32)
        while True:
            candidates = min(wanted, MAX_CANDIDATES)
            rows = (
                self._conn()
                .execute(
                    f"SELECT rowid, distance FROM {self._table(kb.pk)} "  # noqa: S608 (an int)
                    "WHERE embedding MATCH ? AND k = ? ORDER BY distance",
                    (_pack(vector), candidates),
                )
                .fetchall()
            )
            similarity = {int(rowid): _similarity(d) for rowid, d in rows}
            allowed = set(
                searchable_chunks(kb, chunk_filter)
                .filter(pk__in=list(similarity))
                .values_list("pk", flat=True)
            )
            hits = [
                (pk, score)
                for pk, score in sorted(similarity.items(), key=lambda item: (-item[1], item[0]))
                if pk in allowed and (threshold is None or score >= threshold)
            ]
            if len(hits) >= k or len(rows) < candidates or candidates >= MAX_CANDIDATES:
                return hits[:k]
            wanted = candidates * 4


_sqlite_stores: dict[Path, SqliteVecStore] = {}


def get_store() -> VectorStore:
    """The store for the default database: pgvector on PostgreSQL, sqlite-vec otherwise."""
    if connection.vendor == "postgresql":
        return PgVectorStore()
    path = vectors_path_for_default_database()
    if path not in _sqlite_stores:
        _sqlite_stores[path] = SqliteVecStore(path)
    return _sqlite_stores[path]
