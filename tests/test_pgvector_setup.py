"""pgvector as the project's set-up leaves it (platform/install-pgvector.sh, run by .ci/run
and `make test`): the test database has the `vector` extension, in a version with HNSW, and
an HNSW index answers a nearest-neighbour query through it."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.conftest import require_services

pytestmark = [pytest.mark.services, pytest.mark.django_db]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def test_the_test_database_has_pgvector_with_hnsw() -> None:
    require_services(postgres=True, redis=False)
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    assert row is not None, (
        "the vector extension is not in the test database: run platform/install-pgvector.sh"
    )
    assert _version(row[0]) >= (0, 5), f"pgvector {row[0]} has no HNSW indexes"


def test_an_hnsw_index_answers_nearest_neighbour_queries() -> None:
    require_services(postgres=True, redis=False)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE pgvector_probe (id int PRIMARY KEY, embedding vector(3))")
        cursor.execute(
            "CREATE INDEX pgvector_probe_hnsw ON pgvector_probe "
            "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        cursor.execute(
            "INSERT INTO pgvector_probe VALUES "
            "(1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]'), (4, '[0,0,1]')"
        )
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'pgvector_probe_hnsw'")
        assert "USING hnsw" in cursor.fetchone()[0]
        # Make the planner use the index on a table this small, then check it did.
        cursor.execute("SET LOCAL enable_seqscan = off")
        query = "SELECT id FROM pgvector_probe ORDER BY embedding <=> '[1,0.05,0]' LIMIT 2"
        cursor.execute("EXPLAIN " + query)
        plan = "\n".join(line for (line,) in cursor.fetchall())
        assert "pgvector_probe_hnsw" in plan
        cursor.execute(query)
        assert [row[0] for row in cursor.fetchall()] == [1, 3]
