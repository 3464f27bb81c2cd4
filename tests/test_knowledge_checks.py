"""A database without pgvector is refused at start-up with a sentence (knowledge.E001),
and the migration that enables the extension refuses the same way; sqlite-vec loads."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from django.db import connection

from knowledge import dbext
from knowledge.vectorstore import sqlite_vec_problem


class ServerWithout:
    """A PostgreSQL connection's answers for a server that has no `vector` extension."""

    vendor = "postgresql"

    def __init__(self, row: tuple[Any, ...] | None = None) -> None:
        self.row = row

    def cursor(self) -> Any:
        row = self.row

        class Cursor:
            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def execute(self, sql: str, params: Any = None) -> None:
                assert "pg_available_extensions" in sql

            def fetchone(self) -> Any:
                return row

        return Cursor()


@pytest.mark.django_db
def test_this_database_passes_the_start_up_check():
    errors = [e for e in checks.run_checks(databases=["default"]) if e.id.startswith("knowledge.")]
    assert errors == []
    if connection.vendor == "postgresql":
        assert dbext.pgvector_version(connection) >= (0, 5, 0)


def test_a_server_without_pgvector_is_named_with_the_way_to_install_it():
    problem = dbext.vector_extension_problem(ServerWithout())  # type: ignore[arg-type]
    assert problem == dbext.MISSING_MESSAGE
    assert "platform/install-pgvector.sh" in problem and "CREATE EXTENSION vector" in problem
    too_old = dbext.vector_extension_problem(ServerWithout(("0.4.4", "0.4.4")))  # type: ignore[arg-type]
    assert too_old is not None and "0.5 or newer" in too_old
    assert dbext.vector_extension_problem(ServerWithout(("0.8.0", None))) is None  # type: ignore[arg-type]


def test_the_migration_refuses_with_the_same_sentence():
    class Editor:
        connection = ServerWithout()

    operation = dbext.EnableVectorExtension()
    with pytest.raises(dbext.VectorExtensionUnavailable, match="pgvector"):
        operation.database_forwards("knowledge", Editor(), None, None)


def test_the_check_reports_knowledge_e001(monkeypatch):
    from knowledge import checks as knowledge_checks

    monkeypatch.setattr(
        knowledge_checks, "vector_extension_problem", lambda conn: dbext.MISSING_MESSAGE
    )
    (error,) = knowledge_checks.vector_extension_check(databases=["default"])
    assert error.id == "knowledge.E001" and error.msg == dbext.MISSING_MESSAGE


def test_sqlite_vec_loads_through_apsw():
    assert sqlite_vec_problem() is None
