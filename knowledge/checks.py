"""System checks: a database without pgvector (knowledge.E001) and an embedded default
without sqlite-vec (knowledge.E002) are refused at start-up."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, register
from django.db import connections

from knowledge.dbext import vector_extension_problem
from knowledge.vectorstore import sqlite_vec_problem


@register(Tags.database)
def vector_extension_check(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Error]:
    errors: list[Error] = []
    for alias in databases or []:
        try:
            problem = vector_extension_problem(connections[alias])
        except Exception as exc:  # the database is unreachable: Django's own checks say so
            problem = None
            _ = exc
        if problem is not None:
            errors.append(Error(problem, id="knowledge.E001", obj=f"DATABASES[{alias!r}]"))
    return errors


@register()
def sqlite_vec_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if connections["default"].vendor == "postgresql":
        return []
    problem = sqlite_vec_problem()
    return [Error(problem, id="knowledge.E002")] if problem else []
