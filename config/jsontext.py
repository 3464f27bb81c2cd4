"""What can be stored: the one place that knows which text and values PostgreSQL keeps.

`"\\ud800"` is valid JSON but not valid Unicode: PostgreSQL cannot encode it, Python's UTF-8
codec refuses it, so it used to reach the database (or a log line) and fail there with a
500. NUL (`"\\u0000"`) is refused by PostgreSQL's text and jsonb types, and so are JSON's
missing NaN and Infinity. Two doors, one rule:

- input is *refused* where JSON enters the product (`check_text`: the API's body parser,
  the WebSocket's frames) with a clear message, before anything is done with the request;
- what a run produces is *made storable* on its way into the event log (`storable`,
  `storable_text`): a model's or a tool's output cannot be refused after the fact, and one
  run's bad character must not fail the sink's batch, which other runs' events share.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_WALK = 1_000_000  # values; bodies are already capped by DATA_UPLOAD_MAX_MEMORY_SIZE


class UnstorableText(ValueError):
    """The message is user-facing."""


def _bad(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (e.g. \\ud800), which is not valid Unicode"
    return None


def check_text(value: Any) -> None:
    """UnstorableText naming the first string (or key) of `value` that cannot be stored."""
    stack: list[tuple[Any, str]] = [(value, "")]
    seen = 0
    while stack:
        item, where = stack.pop()
        seen += 1
        if seen > MAX_WALK:
            raise UnstorableText("The JSON has too many values.")
        if isinstance(item, str):
            problem = _bad(item)
            if problem:
                raise UnstorableText(f"The text at `{where or '(body)'}` {problem}.")
        elif isinstance(item, dict):
            for key, child in item.items():
                path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and _bad(key):
                    raise UnstorableText(f"A key in `{where or '(body)'}` {_bad(key)}.")
                stack.append((child, path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))


# --- making a run's output storable ---------------------------------------------------------

MAX_VALUE_CHARS = 200_000  # per string in an event payload or a run's outputs
MAX_DEPTH = 20
REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD (the common case, clean
    text, costs one scan: this runs on every streamed token)."""
    if "\x00" not in text and (text.isascii() or not _UNSTORABLE.search(text)):
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, storable copy of a node's output or an event payload: text made
    storable and capped, non-finite numbers as text, LangChain messages and documents by
    their content, anything else by its text form."""
    if depth > MAX_DEPTH:
        return "…"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON (and PostgreSQL's jsonb) has no NaN or Infinity
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        value = storable_text(value)
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    if isinstance(value, dict):
        return {storable_text(str(k)): storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [storable(v, depth + 1) for v in value]
    content = getattr(value, "content", None)
    if isinstance(content, str | list):  # a LangChain message
        return storable(content, depth + 1)
    page_content = getattr(value, "page_content", None)
    if isinstance(page_content, str):  # a LangChain Document
        return {
            "page_content": storable(page_content, depth + 1),
            "metadata": storable(getattr(value, "metadata", {}), depth + 1),
        }
    if hasattr(value, "model_dump"):
        return storable(value.model_dump(), depth + 1)
    return storable(str(value), depth + 1)


def storable_json(value: Any) -> str:
    """The JSON text stored for a value `storable` returned (the sink's own statement;
    the ORM's JSONField writes the same)."""
    return json.dumps(value)
