"""Refusing oversized uploads before their bodies are read.

Three gates, outermost first, each answering a clear 413 (never a 500, never the body in
memory):

1. `RequestSizeLimit` (ASGI, config.asgi): a request whose declared `Content-Length` is
   over the limit is answered before Django reads its body (no copy into a temporary file);
   a body that grows past the limit while streaming (no or a lying Content-Length) stops
   the read (the request is aborted).
2. `UploadSizeMiddleware` (Django): the same check on `CONTENT_LENGTH`, for every server
   (WSGI, the test client).
3. `FileSizeUploadHandler`: while Django parses a multipart body (files always go to a
   temporary file: FILE_UPLOAD_MAX_MEMORY_SIZE), a file past the per-file limit stops the
   parse; the service then checks each file's size again before storing anything.

A reverse proxy in front should hold bodies to the same size (platform/README.md's nginx
`client_max_body_size`): Daphne itself buffers a body to a temporary file before handing
the request over.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse, JsonResponse

UPLOAD_PATH = re.compile(r"^/api/w/[^/]+/knowledge-bases/\d+/documents/?$")
MULTIPART_OVERHEAD = 1024 * 1024


def max_upload_request_bytes() -> int:
    """The largest upload request: every file at the per-file limit, plus the form's own
    bytes."""
    limits = settings.FLOWDECK_KNOWLEDGE
    return limits["MAX_FILE_BYTES"] * limits["MAX_FILES_PER_UPLOAD"] + MULTIPART_OVERHEAD


def too_large_body(declared: int) -> dict[str, str]:
    limit = settings.FLOWDECK_KNOWLEDGE["MAX_FILE_BYTES"]
    per_upload = settings.FLOWDECK_KNOWLEDGE["MAX_FILES_PER_UPLOAD"]
    return {
        "code": "file_too_large",
        "detail": (
            f"The upload is {declared:,} bytes; files are limited to {limit:,} bytes each, "
            f"{per_upload} files per upload."
        ),
    }


def is_upload(method: str, path: str) -> bool:
    return method == "POST" and bool(UPLOAD_PATH.match(path))


def _declared_length(value: str | bytes | None) -> int | None:
    try:
        return int(value) if value not in (None, b"", "") else None
    except (TypeError, ValueError):
        return None


ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class RequestSizeLimit:
    """ASGI middleware: upload requests over `max_upload_request_bytes()` are refused before
    the application reads them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not is_upload(scope.get("method", ""), scope["path"]):
            await self.app(scope, receive, send)
            return
        limit = max_upload_request_bytes()
        headers = dict(scope.get("headers") or [])
        declared = _declared_length(headers.get(b"content-length"))
        if declared is not None and declared > limit:
            body = json.dumps(too_large_body(declared)).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a body longer than it said, or than allowed
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, send)


class UploadSizeMiddleware:
    """Django middleware: the same refusal on `CONTENT_LENGTH`, before the body is parsed."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_upload(request.method or "", request.path):
            declared = _declared_length(request.META.get("CONTENT_LENGTH"))
            if declared is not None and declared > max_upload_request_bytes():
                return JsonResponse(too_large_body(declared), status=413)
            request.upload_handlers.insert(0, FileSizeUploadHandler(request))
        response = self.get_response(request)
        if getattr(request, "knowledge_file_too_large", False):
            # The parse stopped at the oversized file: whatever the view made of the rest
            # (a 422 for the missing files), the answer is this.
            limit = settings.FLOWDECK_KNOWLEDGE["MAX_FILE_BYTES"]
            return JsonResponse(
                {
                    "code": "file_too_large",
                    "detail": f"A file is over the limit of {limit:,} bytes per file.",
                },
                status=413,
            )
        return response


class FileSizeUploadHandler(FileUploadHandler):
    """Stops a multipart parse as soon as one file passes the per-file limit."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.seen = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.seen = getattr(self, "seen", 0) + len(raw_data)
        if self.seen > settings.FLOWDECK_KNOWLEDGE["MAX_FILE_BYTES"]:
            self.request.knowledge_file_too_large = True  # type: ignore[union-attr]
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None
