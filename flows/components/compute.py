"""Pure functions that components send to the CPU pool (`flows.components.cpu`).

Module-level and free of Django, so a forkserver child imports only this module's few
dependencies to run them.
"""

from __future__ import annotations

import json
from typing import Any

from flows.components.patterns import compile_trusted

MAX_JSON_DEPTH = 64
# On RE2: `(.*?)` after every unclosed fence is quadratic on backtracking `re`.
FENCE_RE = compile_trusted(r"```(?:json)?\s*(.*?)```", case_sensitive=False, dot_all=True)


class ComputeError(ValueError):
    """The input cannot be computed; the message is user-facing."""


def _depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def json_value(text: str) -> Any:
    """The JSON value in `text` (or in its first ```json fence); ComputeError if there is
    none or it nests deeper than MAX_JSON_DEPTH."""
    fenced = FENCE_RE.search(text)
    candidate = fenced.group(1) if fenced else text
    try:
        value = json.loads(candidate.strip())
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ComputeError("The text is not valid JSON.") from exc
    if not _depth_ok(value):
        raise ComputeError("The JSON is nested too deeply.")
    return value
