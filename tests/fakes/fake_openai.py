"""A local fake LLM server for tests and benchmarks (test code: never shipped, never imported
by the product).

`FakeOpenAIServer` is a real HTTP server on 127.0.0.1 that speaks the wire protocols the
model components use, so the real client code (langchain-openai / the openai SDK,
langchain-ollama, langchain-anthropic) runs end to end without a network or a model:

- OpenAI chat completions, `POST /v1/chat/completions`: Server-Sent Events
  (`data: {chat.completion.chunk}` lines, then `data: [DONE]`) when `stream` is true,
  a `chat.completion` object otherwise; `GET /v1/models`.
- Ollama, `POST /api/chat`: newline-delimited JSON chunks.
- Anthropic messages, `POST /v1/messages`: the `message_start` ... `message_stop` SSE events.
- Embeddings: OpenAI `POST /v1/embeddings` (`input`: a string, a list of strings, or token
  arrays; `dimensions` honoured; `encoding_format` float or base64) and Ollama
  `POST /api/embed` (and the older `POST /api/embeddings`). The vectors are deterministic
  and meaningful: `fake_embedding(text)` hashes the terms of `knowledge.keyword.tokenize`
  into the dimensions (signed feature hashing) and normalises, so texts that share words
  are close and 订单 in a query is close to 我想查询订单状态. `embed_fail_after=N` answers
  500 to every embedding request after the first N (an endpoint failing halfway);
  `embedding_requests` and `embedded_inputs` count what was embedded.

The reply is streamed token by token (`tokens`, or the words of `reply` with their leading
space), sleeping `delay` seconds between chunks. Scripted tool calls: with `tool_calls`, a
request whose last message is not a tool result is answered with those tool calls; the
follow-up request (carrying the tool results) is answered with the text reply.

Usage in a test::

    with FakeOpenAIServer(reply="Hello there", delay=0.01) as server:
        ChatOpenAI(base_url=server.base_url, api_key="x", model="fake")...
        server.requests  # the JSON bodies received, in order

As a separate process, from the repository root (the `bench_stream` command does this)::

    python -m tests.fakes.fake_openai --port 8765 --tokens 200 --delay 0.005
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The demo model's tokenizer (product code): the fake streams a reply exactly as `llm.demo`
# would. Re-exported for the tests that split replies the same way.
from flows.components.tokens import split_tokens
from knowledge.keyword import tokenize as embedding_terms

__all__ = [
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "DEFAULT_REPLY",
    "FakeOpenAIServer",
    "fake_embedding",
    "split_tokens",
]

DEFAULT_REPLY = "Hello from the fake model."
DEFAULT_EMBEDDING_DIMENSIONS = 64
Reply = str | Callable[[dict], str]


def fake_embedding(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake server's vector for `text`: each term of `knowledge.keyword.tokenize` adds
    +1 or -1 (from its hash) to one dimension (from its hash), then the vector is scaled to
    length 1. Shared terms point the same way; unrelated terms cancel out on average. A text
    without terms gets a fixed unit vector (never the zero vector: cosine needs a length)."""
    vector = [0.0] * dimensions
    for term in embedding_terms(text) or ["\x00empty"]:
        digest = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "big")
        vector[digest % dimensions] += 1.0 if digest >> 63 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0:  # every term cancelled out: still a deterministic unit vector
        vector[len(text) % dimensions] = 1.0
        return vector
    return [x / norm for x in vector]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True
    fake: FakeOpenAIServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
        pass

    # --- plumbing -------------------------------------------------------------------------
    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _write(self, data: str) -> None:
        self.wfile.write(data.encode())
        self.wfile.flush()

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        return body if isinstance(body, dict) else {}

    # --- routes ---------------------------------------------------------------------------
    def _refused(self) -> bool:
        """Answer as the provider does when the server wants a key and this is not it, or
        when told to fail every request; True if it answered."""
        fake = self.server.fake
        if fake.api_key is not None:
            sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if fake.api_key not in {sent, self.headers.get("x-api-key", "")}:
                masked = sent[:3] + "*" * max(0, len(sent) - 7) + sent[-4:] if sent else ""
                self._json(
                    401,
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {masked}.",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    },
                )
                return True
        status = fake.fail_status or (fake._take_failure() if self.command == "POST" else 0)
        if status:
            self._json(
                status,
                {"error": {"message": "fake failure", "type": "server_error", "code": None}},
            )
            return True
        return False

    def do_GET(self) -> None:
        fake = self.server.fake
        fake._record({}, self.path, {k.lower(): v for k, v in self.headers.items()})
        if self._refused():
            return
        if self.path.rstrip("/").endswith("/models"):
            models = [{"id": name, "object": "model"} for name in fake.models]
            self._json(200, {"object": "list", "data": models})
        elif self.path.rstrip("/").endswith("/api/tags"):  # Ollama's model list
            self._json(200, {"models": [{"name": name, "model": name} for name in fake.models]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        fake = self.server.fake
        body = self._body()
        fake._record(body, self.path, {k.lower(): v for k, v in self.headers.items()})
        if self._refused():
            return
        try:
            if self.path.endswith(("/embeddings", "/api/embed")):
                self._embeddings(body)
            elif self.path.endswith("/chat/completions"):
                self._openai(body)
            elif self.path.endswith("/api/chat"):
                self._ollama(body)
            elif self.path.endswith("/messages"):
                self._anthropic(body)
            else:
                self._json(404, {"error": {"message": "not found"}})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-stream (cancel): nothing to do

    # --- OpenAI -----------------------------------------------------------------------------
    def _openai(self, body: dict) -> None:
        fake = self.server.fake
        model = str(body.get("model") or "fake")
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        created = int(time.time())
        calls = fake._tool_calls_for(body)
        tokens = [] if calls else fake._tokens_for(body)
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(tokens) or None}
            if calls:
                message["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                    }
                    for c in calls
                ]
            self._json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if calls else "stop",
                        }
                    ],
                    "usage": fake._usage_for(body, tokens),
                },
            )
            return

        def chunk(delta: dict, finish: str | None = None) -> str:
            payload = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        self._start_stream("text/event-stream")
        stalls = fake._begin_stream()
        self._write(chunk({"role": "assistant", "content": ""}))
        for i, call in enumerate(calls):
            args = json.dumps(call["arguments"])
            half = len(args) // 2
            head = {
                "index": i,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": args[:half]},
            }
            self._write(chunk({"tool_calls": [head]}))
            fake._pause()
            self._write(
                chunk({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
            )
        for index, token in enumerate(tokens):
            fake._pause()
            if stalls and index >= (fake.stall_after or 0):
                fake._stall()
            self._write(chunk({"content": token}))
        self._write(chunk({}, "tool_calls" if calls else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": fake._usage_for(body, tokens),
            }
            self._write(f"data: {json.dumps(usage)}\n\n")
        self._write("data: [DONE]\n\n")

    # --- Ollama -----------------------------------------------------------------------------
    def _ollama(self, body: dict) -> None:
        fake = self.server.fake
        model = str(body.get("model") or "fake")
        tokens = fake._tokens_for(body)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        final: dict[str, Any] = {
            "model": model,
            "created_at": now,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1,
            "prompt_eval_count": 1,
            "eval_count": len(tokens),
        }
        if body.get("stream") is False:
            final["message"]["content"] = "".join(tokens)
            self._json(200, final)
            return
        self._start_stream("application/x-ndjson")
        for token in tokens:
            piece = {
                "model": model,
                "created_at": now,
                "message": {"role": "assistant", "content": token},
                "done": False,
            }
            self._write(json.dumps(piece) + "\n")
            fake._pause()
        self._write(json.dumps(final) + "\n")

    # --- Embeddings (OpenAI and Ollama) -----------------------------------------------------
    def _embeddings(self, body: dict) -> None:
        fake = self.server.fake
        ollama = "/api/" in self.path
        legacy_ollama = self.path.endswith("/api/embeddings")
        raw = body.get("prompt") if legacy_ollama else body.get("input")
        texts = _embedding_texts(raw)
        dimensions = body.get("dimensions") or fake.embedding_dimensions
        if texts is None or not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
            self._json(
                400,
                {
                    "error": {
                        "message": "'input' must be a string, a list of strings or token arrays",
                        "type": "invalid_request_error",
                        "code": None,
                    }
                },
            )
            return
        if not fake._admit_embedding(len(texts)):
            self._json(
                500,
                {"error": {"message": "fake embedding failure", "type": "server_error"}},
            )
            return
        if fake.embed_delay > 0:
            time.sleep(fake.embed_delay)
        model = str(body.get("model") or "fake-embed")
        vectors = [fake_embedding(text, dimensions) for text in texts]
        terms = sum(max(1, len(embedding_terms(text))) for text in texts)
        if legacy_ollama:
            self._json(200, {"embedding": vectors[0]})
        elif ollama:
            self._json(200, {"model": model, "embeddings": vectors, "prompt_eval_count": terms})
        else:
            as_base64 = body.get("encoding_format") == "base64"
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": (
                        base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
                        if as_base64
                        else v
                    ),
                }
                for i, v in enumerate(vectors)
            ]
            self._json(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": model,
                    "usage": {"prompt_tokens": terms, "total_tokens": terms},
                },
            )

    # --- Anthropic --------------------------------------------------------------------------
    def _anthropic(self, body: dict) -> None:
        fake = self.server.fake
        model = str(body.get("model") or "fake")
        tokens = fake._tokens_for(body)
        mid = "msg_" + uuid.uuid4().hex[:12]
        usage = {"input_tokens": 1, "output_tokens": len(tokens)}
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": "".join(tokens)}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                },
            )
            return

        def event(name: str, data: dict) -> str:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

        self._start_stream("text/event-stream")
        start: dict[str, Any] = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 0},
        }
        self._write(event("message_start", {"message": start}))
        self._write(
            event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
        )
        for token in tokens:
            fake._pause()
            delta = {"index": 0, "delta": {"type": "text_delta", "text": token}}
            self._write(event("content_block_delta", delta))
        self._write(event("content_block_stop", {"index": 0}))
        self._write(
            event(
                "message_delta",
                {
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(tokens)},
                },
            )
        )
        self._write(event("message_stop", {}))


def _embedding_texts(raw: Any) -> list[str] | None:
    """The texts of an embeddings request's `input`, or None if it has no valid shape. A
    token array (what OpenAI's client sends after tokenizing) is embedded as its token ids."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(item, int) for item in raw):
        return [" ".join(f"t{token}" for token in raw)]
    texts = []
    for item in raw:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and all(isinstance(token, int) for token in item):
            texts.append(" ".join(f"t{token}" for token in item))
        else:
            return None
    return texts


class FakeOpenAIServer:
    """A real local HTTP server that streams a scripted reply (see the module docstring).

    reply: the text to send, or a function of the request body returning it.
    tokens: an explicit token list (overrides `reply`).
    delay: seconds to sleep between streamed chunks.
    tool_calls: `[{"name": "calculator", "arguments": {"expression": "2+3"}}]` — sent as the
        answer to every request whose last message is not a tool result.
    fail_status: answer every request with this HTTP error status instead (e.g. 500, 401).
    fail_first / fail_first_status: answer the first `fail_first` POST requests with
        `fail_first_status` (503 by default; 429 for a rate limit), then serve normally
        (a provider that recovers); `failed` counts those answered so.
    stall_after: an OpenAI stream sends this many tokens, then nothing more until the server
        stops (a provider that hangs mid-answer); None: never stalls.
    stall_first: with `stall_after`, only the first N streams stall (0: every one).
    api_key: when set, a request without this key (`Authorization: Bearer` or `x-api-key`)
        gets the provider's 401 "invalid_api_key" answer.
    models: what the model lists (`GET /v1/models`, Ollama's `GET /api/tags`) name.
    embedding_dimensions: the vectors' length when a request names no `dimensions`.
    embed_fail_after: answer 500 to every embedding request after this many succeeded
        (None: never); settable while the server runs.
    embed_delay: seconds each embedding request takes (a slow endpoint).
    embedding_requests / embedded_inputs: embedding requests answered with vectors, and the
        texts they embedded in all.
    """

    def __init__(
        self,
        reply: Reply = DEFAULT_REPLY,
        tokens: list[str] | None = None,
        delay: float = 0.0,
        tool_calls: list[dict[str, Any]] | None = None,
        *,
        fail_status: int = 0,
        fail_first: int = 0,
        fail_first_status: int = 503,
        stall_after: int | None = None,
        stall_first: int = 0,
        api_key: str | None = None,
        models: tuple[str, ...] = ("fake",),
        embedding_dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS,
        embed_fail_after: int | None = None,
        embed_delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.reply = reply
        self.tokens = list(tokens) if tokens is not None else None
        self.delay = delay
        self.tool_calls = [
            {"id": c.get("id") or f"call_{i}_{uuid.uuid4().hex[:8]}", **c}
            for i, c in enumerate(tool_calls or [])
        ]
        self.fail_status = fail_status
        self.fail_first = fail_first
        self.fail_first_status = fail_first_status
        self.failed = 0
        self.stall_after = stall_after
        self.stall_first = stall_first
        self.streams = 0  # OpenAI streams begun
        self._stopping = threading.Event()
        self.api_key = api_key
        self.models = models
        self.embedding_dimensions = embedding_dimensions
        self.embed_fail_after = embed_fail_after
        self.embed_delay = embed_delay
        self.embedding_requests = 0
        self.embedded_inputs = 0
        self.requests: list[dict] = []
        # The `usage` each OpenAI chat answer reported (streams only when asked for it).
        self.reported_usage: list[dict[str, int]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []  # per request, lower-cased names
        self._lock = threading.Lock()
        self._host = host
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        self._stopping.clear()
        self._httpd = _Server((self._host, self._port), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # a stalled stream ends (its client sees the connection close)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        """`http://127.0.0.1:PORT` (the Ollama client's base URL)."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1` (the OpenAI and Anthropic clients' base URL)."""
        return f"{self.root_url}/v1"

    # --- scripting --------------------------------------------------------------------------
    def _record(self, body: dict, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(body)
            self.paths.append(path)
            self.headers.append(headers)

    def _admit_embedding(self, inputs: int) -> bool:
        """Count an embedding request about to be answered; False if it must fail instead."""
        with self._lock:
            limit = self.embed_fail_after
            if limit is not None and self.embedding_requests >= limit:
                return False
            self.embedding_requests += 1
            self.embedded_inputs += inputs
            return True

    def _take_failure(self) -> int:
        """The status to fail this request with (one of the first `fail_first`), or 0."""
        with self._lock:
            if self.failed >= self.fail_first:
                return 0
            self.failed += 1
            return self.fail_first_status

    def _begin_stream(self) -> bool:
        """Count an OpenAI stream about to be sent; True if it must stall (`stall_after`)."""
        with self._lock:
            self.streams += 1
            if self.stall_after is None:
                return False
            return not self.stall_first or self.streams <= self.stall_first

    def _stall(self) -> None:
        self._stopping.wait()
        raise ConnectionResetError("the fake server stopped while stalled")

    def _pause(self) -> None:
        if self.delay > 0:
            time.sleep(self.delay)

    def _tokens_for(self, body: dict) -> list[str]:
        if self.tokens is not None:
            return list(self.tokens)
        text = self.reply(body) if callable(self.reply) else self.reply
        return split_tokens(str(text))

    def _usage_for(self, body: dict, tokens: list[str]) -> dict[str, int]:
        """OpenAI's `usage` for a reply, recorded in `reported_usage`: the prompt's tokens
        are the words of its messages (split as replies are), the completion's the reply's
        stream chunks (a tool-call reply counts one per call)."""
        prompt = sum(
            len(split_tokens(str(m.get("content") or "")))
            for m in body.get("messages") or []
            if isinstance(m, dict)
        )
        completion = len(tokens) or len(self._tool_calls_for(body))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        with self._lock:
            self.reported_usage.append(usage)
        return usage

    def _tool_calls_for(self, body: dict) -> list[dict[str, Any]]:
        if not self.tool_calls:
            return []
        messages = body.get("messages") or [{}]
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        return [] if last.get("role") == "tool" else self.tool_calls

    def iter_requests(self) -> Iterator[dict]:
        with self._lock:
            return iter(list(self.requests))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=0, help="stream N tokens ' tok0' ...")
    parser.add_argument("--reply", default=DEFAULT_REPLY)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--embedding-dimensions", type=int, default=DEFAULT_EMBEDDING_DIMENSIONS)
    parser.add_argument(
        "--embed-fail-after", type=int, default=None, help="500 after N embedding requests"
    )
    parser.add_argument(
        "--embed-delay", type=float, default=0.0, help="seconds per embedding request"
    )
    args = parser.parse_args(argv)
    tokens = [f" tok{i}" for i in range(args.tokens)] if args.tokens else None
    server = FakeOpenAIServer(
        reply=args.reply,
        tokens=tokens,
        delay=args.delay,
        embedding_dimensions=args.embedding_dimensions,
        embed_fail_after=args.embed_fail_after,
        embed_delay=args.embed_delay,
        host=args.host,
        port=args.port,
    )
    server.start()
    print(f"fake LLM server listening on {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
