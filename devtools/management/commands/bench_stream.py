"""`manage.py bench_stream`: streaming throughput and latency through the whole pipeline.

Against a local fake OpenAI-compatible server (tests/fakes/fake_openai.py) it measures, in the
same run:

- the raw baseline: `ChatOpenAI.stream` in this process;
- the pipeline: a WebSocket client -> Daphne -> Celery worker -> executor -> event sink ->
  database -> Redis -> Daphne -> the client (real subprocesses, the configured database);

time to first token and tokens/s (N / time from request to last token) for N = 200, 2,000
and 20,000; then 50 concurrent runs
with a slow upstream (20 tokens/s each) for token delivery latency p50/p99; and database
rows written per 1,000 tokens. Prints a table and writes JSON (medians of --repeat runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

from ops.processes import (
    free_port,
    redis_server_binary,
    wait_for_port,
    web_command,
    worker_command,
)

SIZES = (200, 2_000, 20_000)


@contextlib.contextmanager
def fake_server(module: str, *args: str) -> Iterator[str]:
    """A fake OpenAI server in its own process (no GIL shared with the measuring client).
    From the checkout's root: the fakes (tests/, devtools/) are not installed packages."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=settings.BASE_DIR,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening on " not in line:
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line.rsplit("listening on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Command(BaseCommand):
    help = "Benchmark token streaming through the whole pipeline against the raw client."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repeat", type=int, default=3)
        parser.add_argument("--concurrent", type=int, default=50)
        parser.add_argument("--slow-tokens", type=int, default=60, help="tokens per slow run")
        parser.add_argument("--slow-rate", type=float, default=20.0, help="tokens/s upstream")
        parser.add_argument("--out", default=str(Path(settings.BASE_DIR) / "bench-results"))
        parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
        parser.add_argument("--keep", action="store_true", help="keep the bench workspace")
        parser.add_argument(
            "--workers", type=int, default=1, help="Celery worker processes (threads pool each)"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        from subprocess import DEVNULL, Popen

        sizes = [int(s) for s in opts["sizes"].split(",") if s.strip()]
        procs: list[Popen] = []
        env = dict(os.environ)
        redis_url = settings.REDIS_URL
        if not redis_url:
            port = free_port()
            redis = Popen(
                [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                stdout=DEVNULL,
            )
            procs.append(redis)
            wait_for_port("127.0.0.1", port, 20, redis)
            redis_url = f"redis://127.0.0.1:{port}/0"
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        # The fake model server listens on loopback: allow that one network for the bench
        # (a production configuration allows no private model endpoints by default).
        loopback = "127.0.0.1/32"
        if loopback not in settings.FLOWDECK_MODEL_PRIVATE_NETWORKS:
            settings.FLOWDECK_MODEL_PRIVATE_NETWORKS = [
                *settings.FLOWDECK_MODEL_PRIVATE_NETWORKS,
                loopback,
            ]
        env.update(
            FLOWDECK_MODEL_PRIVATE_NETWORKS=",".join(settings.FLOWDECK_MODEL_PRIVATE_NETWORKS),
            REDIS_URL=redis_url,
            FLOWDECK_CHANNEL_PREFIX=prefix,
            FLOWDECK_RUNS_PER_MINUTE_PER_USER="100000",
            FLOWDECK_RUNS_PER_MINUTE_PER_WORKSPACE="100000",
            FLOWDECK_MAX_CONCURRENT_RUNS="1000",
            PYTHONUNBUFFERED="1",
        )
        http_port = free_port()
        log_dir = Path(opts["out"])
        log_dir.mkdir(parents=True, exist_ok=True)
        workers = opts["workers"]
        names = ["daphne", *(f"worker{i}" for i in range(workers))]
        logs = [open(log_dir / f"{n}.log", "wb") for n in names]  # noqa: SIM115
        # The production processes' command lines (ops.processes), so the web process is
        # prepared (frozen heap, switch interval) as in production.
        daphne = web_command(host="127.0.0.1", port=http_port)
        procs.append(Popen(daphne, env=env, stdout=logs[0], stderr=logs[0]))
        threads = max(32, opts["concurrent"] // workers + 8)
        for i in range(workers):
            worker = worker_command(concurrency=threads, name=f"bench{i}", loglevel="WARNING")
            procs.append(
                Popen(
                    worker,
                    env=env,
                    stdout=logs[i + 1],
                    stderr=logs[i + 1],
                )
            )
        fixture = None
        try:
            wait_for_port("127.0.0.1", http_port, 60, procs[-1 - workers])
            time.sleep(3)  # let the workers connect to the broker
            fixture = BenchFixture.create()
            result = asyncio.run(
                run_benchmarks(
                    fixture,
                    f"ws://127.0.0.1:{http_port}",
                    sizes,
                    opts["repeat"],
                    opts["concurrent"],
                    opts["slow_tokens"],
                    opts["slow_rate"],
                )
            )
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                proc.wait(20)
            for log in logs:
                log.close()
            if fixture is not None and not opts["keep"]:
                fixture.delete()
        result["database"] = connection.vendor
        result["workers"] = workers
        self.print_table(result)
        path = log_dir / "bench_stream.json"
        path.write_text(json.dumps(result, indent=2))
        self.stdout.write(f"\nwrote {path}")

    def print_table(self, result: dict[str, Any]) -> None:
        w = self.stdout.write
        w(
            f"\nbench_stream — database: {result['database']}, {result['workers']} worker "
            f"process(es), medians of {result['repeat']} runs\n"
        )
        w(
            f"{'N':>7} | {'raw TTFT ms':>11} | {'pipe TTFT ms':>12} | {'overhead ms':>11} | "
            f"{'raw tok/s':>10} | {'pipe tok/s':>10} | {'ratio':>6} | {'rows/1k tok':>11}"
        )
        w("-" * 100)
        for row in result["sizes"]:
            w(
                f"{row['n']:>7} | {row['raw_ttft_ms']:>11.1f} | {row['pipe_ttft_ms']:>12.1f} | "
                f"{row['ttft_overhead_ms']:>11.1f} | {row['raw_tokens_per_s']:>10.0f} | "
                f"{row['pipe_tokens_per_s']:>10.0f} | {row['ratio']:>6.2f} | "
                f"{row['rows_per_1k_tokens']:>11.1f}"
            )
        c = result["concurrent"]
        if c is None:
            return
        w(
            f"\nraw baseline, {c['runs']} threads of ChatOpenAI.stream: delivery latency p50 "
            f"{c['raw_latency_p50_ms']:.1f} ms, p99 {c['raw_latency_p99_ms']:.1f} ms"
        )
        w(
            f"\n{c['runs']} concurrent runs x {c['tokens_per_run']} tokens at {c['upstream_rate']}"
            f" tok/s: delivery latency p50 {c['latency_p50_ms']:.1f} ms, p99 "
            f"{c['latency_p99_ms']:.1f} ms, max {c['latency_max_ms']:.1f} ms; "
            f"{c['rows_per_1k_tokens']:.1f} rows per 1,000 tokens; all exact: {c['all_exact']}"
        )
        w(
            f"\n  upstream -> worker event p50 {c['upstream_to_worker_p50_ms']:.1f} ms, p99 "
            f"{c['upstream_to_worker_p99_ms']:.1f} ms; worker event -> client p50 "
            f"{c['worker_to_client_p50_ms']:.1f} ms, p99 {c['worker_to_client_p99_ms']:.1f} ms"
        )
        w(
            "\n  by upstream send time: "
            + "; ".join(
                f"{b['t']:.1f}s p50 {b['p50_ms']:.0f} p99 {b['p99_ms']:.0f}" for b in c["over_time"]
            )
            + "\n  of which upstream -> worker: "
            + "; ".join(
                f"{b['t']:.1f}s p50 {b['to_worker_p50_ms']:.0f} p99 {b['to_worker_p99_ms']:.0f}"
                for b in c["over_time"]
            )
        )
        w("\ntargets: ratio >= 0.9 at N=20,000; TTFT overhead <= 50 ms; p99 <= 150 ms")


class BenchFixture:
    """A throwaway workspace, user, token, credential and flow; deleted afterwards."""

    def __init__(self, workspace: Any, user: Any, token: str) -> None:
        self.workspace = workspace
        self.user = user
        self.token = token

    @classmethod
    def create(cls) -> BenchFixture:
        from accounts.models import User
        from accounts.services import api_token_create, workspace_create

        slug = f"bench-{uuid.uuid4().hex[:8]}"
        user = User.objects.create_user(f"{slug}@bench.local", None)
        workspace = workspace_create(name=slug, slug=slug, owner=user)
        token = api_token_create(workspace=workspace, user=user, name="bench").secret
        return cls(workspace, user, token)

    def flow_for(self, base_url: str) -> int:
        """chat input -> llm.openai_chat (a credential for `base_url`) -> text output."""
        from accounts.models import Membership
        from flows.services import credential_create, flow_create

        acting = Membership.objects.get(workspace=self.workspace, user=self.user)
        credential = credential_create(
            workspace=self.workspace,
            acting=acting,
            name=f"fake {uuid.uuid4().hex[:6]}",
            provider="openai",
            base_url=base_url,
            api_key="bench",
        )
        node = {"position": {"x": 0, "y": 0}}
        graph = {
            "nodes": [
                {**node, "id": "input", "component": "io.chat_input", "params": {}},
                {
                    **node,
                    "id": "model",
                    "component": "llm.openai_chat",
                    "params": {"credential": credential.pk, "model": "fake"},
                },
                {**node, "id": "output", "component": "io.text_output", "params": {}},
            ],
            "edges": [
                {
                    "source": "input",
                    "source_port": "text",
                    "target": "model",
                    "target_port": "prompt",
                },
                {
                    "source": "model",
                    "source_port": "text",
                    "target": "output",
                    "target_port": "text",
                },
            ],
        }
        return flow_create(workspace=self.workspace, acting=acting, name="bench", graph=graph).pk

    def delete(self) -> None:
        from runs.models import Run

        Run.objects.filter(workspace=self.workspace).delete()
        self.workspace.delete()
        self.user.delete()

    def rows_for(self, run_ids: list[str]) -> int:
        from runs.models import RunEvent

        return RunEvent.objects.filter(run_id__in=run_ids).count()


async def _raw(base_url: str) -> tuple[float, float, int]:
    """(ttft seconds, tokens/s, tokens) of ChatOpenAI.stream in this process."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    def go() -> tuple[float, float, int]:
        model = ChatOpenAI(
            base_url=base_url, api_key=SecretStr("bench"), model="fake", max_retries=0
        )
        start = time.perf_counter()
        first = last = None
        count = 0
        for chunk in model.stream("go"):
            if chunk.content:
                now = time.perf_counter()
                first = first or now
                last = now
                count += str(chunk.content).count(" ")
        assert first is not None and last is not None
        return first - start, count / max(last - start, 1e-9), count

    return await asyncio.to_thread(go)


async def _pipeline(
    ws_url: str, fixture: BenchFixture, flow_id: int
) -> tuple[float, float, int, str]:
    """(ttft seconds, tokens/s, tokens, run id) measured at a WebSocket client."""
    import websockets
    from websockets.typing import Origin

    url = f"{ws_url}/ws/w/{fixture.workspace.slug}/exec"
    async with websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {fixture.token}"},
        origin=Origin(ws_url.replace("ws://", "http://")),
        max_size=None,
    ) as ws:
        json.loads(await ws.recv())  # session
        start = time.perf_counter()
        await ws.send(json.dumps({"action": "run", "flow": flow_id, "inputs": {"input": "go"}}))
        first = last = None
        count = 0
        run_id = ""
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 120))
            kind = message.get("event")
            if kind == "accepted":
                run_id = message["run_id"]
            elif kind == "on_token":
                now = time.perf_counter()
                first = first or now
                last = now
                count += message["data"].count(" ")
            elif kind == "completed":
                assert message["status"] == "success", message
                break
            elif kind == "rejected":
                raise RuntimeError(message)
        assert first is not None and last is not None
        return first - start, count / max(last - start, 1e-9), count, run_id


async def run_benchmarks(
    fixture: BenchFixture,
    ws_url: str,
    sizes: list[int],
    repeat: int,
    concurrent: int,
    slow_tokens: int,
    slow_rate: float,
) -> dict[str, Any]:
    from asgiref.sync import sync_to_async

    rows = []
    for n in sizes:
        with fake_server("tests.fakes.fake_openai", "--tokens", str(n), "--delay", "0") as base_url:
            flow_id = await sync_to_async(fixture.flow_for)(base_url)
            await _pipeline(ws_url, fixture, flow_id)  # warm-up
            raw, pipe, run_ids = [], [], []
            for _ in range(repeat):
                raw.append(await _raw(base_url))
                result = await _pipeline(ws_url, fixture, flow_id)
                pipe.append(result)
                run_ids.append(result[3])
                assert result[2] == n, f"pipeline delivered {result[2]} of {n} tokens"
            event_rows = await sync_to_async(fixture.rows_for)(run_ids)
        raw_ttft = statistics.median(r[0] for r in raw) * 1000
        pipe_ttft = statistics.median(p[0] for p in pipe) * 1000
        raw_tps = statistics.median(r[1] for r in raw)
        pipe_tps = statistics.median(p[1] for p in pipe)
        rows.append(
            {
                "n": n,
                "raw_ttft_ms": raw_ttft,
                "pipe_ttft_ms": pipe_ttft,
                "ttft_overhead_ms": pipe_ttft - raw_ttft,
                "raw_tokens_per_s": raw_tps,
                "pipe_tokens_per_s": pipe_tps,
                "ratio": pipe_tps / raw_tps,
                "rows_per_1k_tokens": event_rows / (n * repeat) * 1000,
            }
        )
    concurrent_result = (
        await _concurrent(fixture, ws_url, concurrent, slow_tokens, slow_rate)
        if concurrent
        else None
    )
    return {"repeat": repeat, "sizes": rows, "concurrent": concurrent_result}


def _over_time(samples: list[tuple[float, float, float]]) -> list[dict[str, float]]:
    """Delivery latency per half second of upstream send time (start-up vs steady state)."""
    start = min(sent for sent, _, _ in samples)
    buckets: dict[float, list[tuple[float, float]]] = {}
    for sent, latency, to_worker in samples:
        buckets.setdefault(int((sent - start) * 2) / 2, []).append((latency, to_worker))
    return [
        {
            "t": t,
            "tokens": len(values),
            "p50_ms": statistics.median(v[0] for v in values),
            "p99_ms": _percentile([v[0] for v in values], 0.99),
            "to_worker_p50_ms": statistics.median(v[1] for v in values),
            "to_worker_p99_ms": _percentile([v[1] for v in values], 0.99),
        }
        for t, values in sorted(buckets.items())
    ]


async def _concurrent(
    fixture: BenchFixture, ws_url: str, runs: int, tokens: int, rate: float
) -> dict[str, Any]:
    """`runs` runs at once, each streaming `tokens` at `rate`/s; every token carries the
    wall-clock time the fake server sent it, so the client measures delivery latency."""
    import websockets
    from asgiref.sync import sync_to_async
    from websockets.typing import Origin

    latencies: list[float] = []
    # Where the time goes: upstream send -> the worker's event (model client, coalescing),
    # and the worker's event -> the client (persist, publish, Daphne).
    to_worker: list[float] = []
    to_client: list[float] = []
    exact: list[bool] = []
    samples: list[tuple[float, float, float]] = []

    async def one(flow_id: int) -> str:
        url = f"{ws_url}/ws/w/{fixture.workspace.slug}/exec"
        async with websockets.connect(
            url,
            additional_headers={"Authorization": f"Bearer {fixture.token}"},
            origin=Origin(ws_url.replace("ws://", "http://")),
            max_size=None,
        ) as ws:
            json.loads(await ws.recv())
            await ws.send(json.dumps({"action": "run", "flow": flow_id, "inputs": {"input": "go"}}))
            run_id, seqs = "", []
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                kind = message.get("event")
                if kind == "accepted":
                    run_id = message["run_id"]
                    continue
                if "seq" in message:
                    seqs.append(message["seq"])
                if kind == "on_token":
                    received = time.time()
                    emitted = datetime.fromisoformat(message["ts"]).timestamp()
                    to_client.append((received - emitted) * 1000)
                    for part in message["data"].split():
                        sent = float(part[1:])
                        latencies.append((received - sent) * 1000)
                        samples.append((sent, (received - sent) * 1000, (emitted - sent) * 1000))
                        to_worker.append((emitted - sent) * 1000)
                elif kind == "completed":
                    break
            exact.append(seqs == list(range(1, len(seqs) + 1)))
            return run_id

    with fake_server(
        "devtools.benchserver", "--tokens", str(tokens), "--interval", str(1.0 / rate)
    ) as base_url:
        flow_id = await sync_to_async(fixture.flow_for)(base_url)
        run_ids = await asyncio.gather(*(one(flow_id) for _ in range(runs)))
        # The same load without the pipeline: ChatOpenAI.stream in `runs` threads of one
        # process (its own, so it shares no GIL with this one).
        raw = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "devtools.benchserver",
                "--tokens",
                "0",
                "--interval",
                "0",
                "--raw-clients",
                str(runs),
                "--url",
                base_url,
            ],
            capture_output=True,
            text=True,
            cwd=settings.BASE_DIR,
            check=True,
        )
        baseline = json.loads(raw.stdout.strip().splitlines()[-1])
    event_rows = await sync_to_async(fixture.rows_for)(list(run_ids))
    return {
        "raw_latency_p50_ms": baseline["latency_p50_ms"],
        "raw_latency_p99_ms": baseline["latency_p99_ms"],
        "runs": runs,
        "tokens_per_run": tokens,
        "upstream_rate": rate,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p99_ms": _percentile(latencies, 0.99),
        "latency_max_ms": max(latencies),
        "over_time": _over_time(samples),
        "upstream_to_worker_p50_ms": statistics.median(to_worker),
        "upstream_to_worker_p99_ms": _percentile(to_worker, 0.99),
        "worker_to_client_p50_ms": statistics.median(to_client),
        "worker_to_client_p99_ms": _percentile(to_client, 0.99),
        "rows_per_1k_tokens": event_rows / (runs * tokens) * 1000,
        "all_exact": all(exact) and len(exact) == runs,
    }
