"""The pgvector extension: the migration that enables it and the start-up check for it.

On PostgreSQL, vector retrieval needs the `vector` extension (pgvector >= 0.5, for HNSW).
Without it the platform must say so when it starts (`manage.py check --database default`,
`migrate`, `serve --prepare`) in words an operator can act on, not fail a query later."""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from pgvector.django import VectorExtension

MISSING_MESSAGE = (
    "PostgreSQL has no 'vector' extension (pgvector). Knowledge bases need pgvector 0.5 "
    "or newer: run `sudo bash platform/install-pgvector.sh` on the database machine "
    "(Debian/Ubuntu, PostgreSQL 15), or ask the database administrator to install pgvector "
    "and run `CREATE EXTENSION vector;` in this database."
)
MIN_VERSION = (0, 5, 0)


def _version(text: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in (text or "").split("."))
    except ValueError:
        return ()


def vector_extension_problem(connection: BaseDatabaseWrapper) -> str | None:
    """Why this PostgreSQL database cannot hold vectors, or None (also for SQLite)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT default_version, installed_version FROM pg_available_extensions "
            "WHERE name = 'vector'"
        )
        row = cursor.fetchone()
    if row is None:
        return MISSING_MESSAGE
    version = _version(row[1] or row[0])
    if version and version < MIN_VERSION:
        return (
            f"PostgreSQL's pgvector is {'.'.join(map(str, version))}; knowledge bases need "
            "0.5 or newer (HNSW indexes). Upgrade the package, then `ALTER EXTENSION vector "
            "UPDATE;`."
        )
    return None


def pgvector_version(connection: BaseDatabaseWrapper) -> tuple[int, ...]:
    """The installed pgvector's version in this database (() if none)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    return _version(row[0]) if row else ()


class VectorExtensionUnavailable(RuntimeError):
    pass


class EnableVectorExtension(VectorExtension):
    """`CREATE EXTENSION IF NOT EXISTS vector`, refusing with MISSING_MESSAGE first when the
    server has no pgvector at all (instead of PostgreSQL's 'could not open extension
    control file')."""

    def __init__(self, hints: Any = None) -> None:
        super().__init__(hints)
        self.name = "vector"
        self.hints = hints or {}

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        connection = schema_editor.connection
        if connection.vendor == "postgresql":
            problem = vector_extension_problem(connection)
            if problem is not None:
                raise VectorExtensionUnavailable(problem)
        super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        # Other apps (or a DBA) may rely on the extension: leave it installed.
        return None


def all_vector_problems() -> list[tuple[str, str]]:
    """(alias, problem) for every configured PostgreSQL database without pgvector."""
    problems = []
    for alias in connections:
        problem = vector_extension_problem(connections[alias])
        if problem is not None:
            problems.append((alias, problem))
    return problems
