"""Text that cannot be stored: lone UTF-16 surrogates and NUL characters in JSON input.

`"\\ud800"` is valid JSON but not valid Unicode: PostgreSQL cannot encode it, Python's UTF-8
codec refuses it, so it used to reach the database (or a log line) and fail there with a
500. NUL (`"\\u0000"`) is refused by PostgreSQL's text and jsonb types. Both are refused
where JSON enters the product (the API's body parser, the WebSocket's frames) with a
clear message, before anything is done with the request.
"""

from __future__ import annotations

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
