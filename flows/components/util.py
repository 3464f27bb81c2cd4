"""Small helpers shared by components."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connections

from flows.components.base import NodeError

MAX_TEXT = 200_000
T = TypeVar("T")


def as_text(value: Any) -> str:
    """A readable text form of any port value (messages, documents, JSON, lists)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    content = getattr(value, "content", None)
    if isinstance(content, str):
        return content
    page_content = getattr(value, "page_content", None)
    if isinstance(page_content, str):
        return page_content
    if isinstance(value, list | tuple):
        return "\n\n".join(as_text(v) for v in value)
    if isinstance(value, dict | int | float | bool):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def chunk_text(chunk: Any) -> str:
    """The text of a streamed message chunk (string content or content blocks)."""
    content = getattr(chunk, "content", chunk)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
        return "".join(parts)
    return ""


# Exception classes (by name, anywhere in the MRO: the provider SDKs are imported lazily)
# that say a request timed out, or that its connection failed or broke off.
_TIMEOUT_ERRORS = {"APITimeoutError", "TimeoutException", "TimeoutError"}
_CONNECTION_ERRORS = {"APIConnectionError", "TransportError", "ConnectionError"}


def model_error(exc: Exception) -> NodeError:
    """A user-facing error for a failed model call, without echoing the provider's message
    (which can quote the API key). Applied by `RunContext.model_stream`. Its `code` classes
    the failure for the node's policy: `server_error` (HTTP 5xx), `rate_limited` (429),
    `timeout`, `connection`, `provider_refused` (another HTTP status) or `model_failed`."""
    status = getattr(exc, "status_code", None) or getattr(
        getattr(exc, "response", None), "status_code", None
    )
    name = type(exc).__name__
    if status:
        code = (
            "rate_limited"
            if status == 429
            else "server_error"
            if 500 <= int(status) <= 599
            else "provider_refused"
        )
        return NodeError(f"The model endpoint answered HTTP {status} ({name}).", code)
    classes = {cls.__name__ for cls in type(exc).__mro__}
    if classes & _TIMEOUT_ERRORS:
        return NodeError(f"The model endpoint did not answer in time ({name}).", "timeout")
    if classes & _CONNECTION_ERRORS:
        return NodeError(
            f"The model endpoint could not be reached or broke off ({name}).", "connection"
        )
    return NodeError(f"The model endpoint could not be reached or failed ({name}).", "model_failed")


async def run_db(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ORM work off the event loop, in a worker thread whose database
    connection is closed afterwards (no connection outlives the call in a pool thread)."""

    def call() -> T:
        try:
            return fn(*args)
        finally:
            connections.close_all()  # this thread's connections only

    return await asyncio.to_thread(call)
