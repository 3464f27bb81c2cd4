"""`manage.py bench_iteration`: an iteration over many items against the limit.

On a fake OpenAI-compatible upstream in its own process (tests/fakes/fake_openai.py,
`--tokens` per answer, no delay): `--items` calls made by one plain asyncio program with
LangChain's ChatOpenAI.astream and `--concurrency` at once (the limit), against a run of a
flow whose `flow.iterate` node runs a body flow (chat input -> llm.openai_chat -> text
output) once per item with the same concurrency, executed in this process by the engine
with its real sink and database (every event written, as in a worker). Also one plain run
of the body, for the rows its log writes per 1,000 tokens. Medians of `--repeat`; ratios
within each repeat (this machine is shared and noisy). Prints a table, writes JSON to
bench-results/bench_iteration.json, deletes what it made.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

from devtools.management.commands.bench_stream import BenchFixture, fake_server


class Command(BaseCommand):
    help = "An iteration over many items against the same calls in a plain asyncio program."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items", type=int, default=1000)
        parser.add_argument("--concurrency", type=int, default=10)
        parser.add_argument("--tokens", type=int, default=20, help="tokens per answer")
        parser.add_argument("--repeat", type=int, default=3)
        parser.add_argument("--out", default="bench-results")

    def handle(self, *args: Any, **opts: Any) -> None:
        items, concurrency, repeat = opts["items"], opts["concurrency"], opts["repeat"]
        fixture = BenchFixture.create()
        rows: list[dict[str, float]] = []
        try:
            with fake_server(
                "tests.fakes.fake_openai", "--tokens", str(opts["tokens"]), "--delay", "0"
            ) as url:
                body = fixture.flow_for(url)
                parent = self._parent(fixture, body, concurrency)
                plain_rows, plain_tokens = self._plain(fixture, body)
                for i in range(repeat):
                    limit = asyncio.run(_limit(url, items, concurrency))
                    seconds, run_rows, tokens = self._iteration(fixture, parent, items)
                    rows.append(
                        {
                            "limit_s": limit,
                            "iteration_s": seconds,
                            "ratio": seconds / limit,
                            "rows_per_1k_tokens": run_rows * 1000 / max(tokens, 1),
                        }
                    )
                    self.stdout.write(
                        f"repeat {i + 1}: limit {limit:.2f} s, iteration {seconds:.2f} s"
                    )
        finally:
            fixture.delete()
        result = {
            "database": connection.vendor,
            "items": items,
            "concurrency": concurrency,
            "tokens_per_answer": opts["tokens"],
            "repeats": rows,
            "median": {key: statistics.median(r[key] for r in rows) for key in rows[0]},
            "plain_run_rows_per_1k_tokens": plain_rows * 1000 / max(plain_tokens, 1),
        }
        self._report(result)
        path = Path(opts["out"])
        path.mkdir(parents=True, exist_ok=True)
        (path / "bench_iteration.json").write_text(json.dumps(result, indent=2))
        self.stdout.write(f"\nwrote {path / 'bench_iteration.json'}")

    def _parent(self, fixture: BenchFixture, body: int, concurrency: int) -> int:
        from accounts.models import Membership
        from flows.services import flow_create

        acting = Membership.objects.get(workspace=fixture.workspace, user=fixture.user)

        def node(node_id: str, component: str, **params: Any) -> dict[str, Any]:
            return {
                "id": node_id,
                "component": component,
                "params": params,
                "position": {"x": 0, "y": 0},
            }

        graph = {
            "nodes": [
                node("input", "io.chat_input"),
                node("split", "parser.json"),
                node(
                    "loop",
                    "flow.iterate",
                    flow=body,
                    version=1,
                    inputs=["input"],
                    outputs=["output"],
                    concurrency=concurrency,
                    max_items=1000,
                ),
                node("out", "io.text_output"),
            ],
            "edges": [
                {
                    "source": "input",
                    "source_port": "text",
                    "target": "split",
                    "target_port": "text",
                },
                {
                    "source": "split",
                    "source_port": "json",
                    "target": "loop",
                    "target_port": "items",
                },
                {
                    "source": "loop",
                    "source_port": "results",
                    "target": "out",
                    "target_port": "text",
                },
            ],
        }
        return flow_create(
            workspace=fixture.workspace, acting=acting, name="iterate", graph=graph
        ).pk

    def _execute(self, fixture: BenchFixture, flow_id: int, text: str) -> tuple[float, str]:
        from flows.models import FlowVersion
        from runs.engine.executor import execute_claimed_run
        from runs.models import Run
        from runs.services import run_claim

        version = FlowVersion.objects.get(flow_id=flow_id, number=1)
        run = Run.objects.create(
            workspace=fixture.workspace,
            flow_id=flow_id,
            flow_version=version,
            session_id=f"bench-{uuid.uuid4().hex[:8]}",
            started_by=fixture.user,
            inputs={"input": text},
        )
        claimed = run_claim(run_id=str(run.pk), task_id="bench", worker="bench")
        assert claimed is not None
        start = time.perf_counter()
        execute_claimed_run(claimed)
        seconds = time.perf_counter() - start
        run.refresh_from_db()
        if run.status != "succeeded":
            raise RuntimeError(f"the run ended {run.status}: {run.error}")
        return seconds, str(run.pk)

    def _tokens(self, run_id: str) -> int:
        from runs.models import RunEvent

        usage = 0
        for payload in RunEvent.objects.filter(run_id=run_id, event="node_finished").values_list(
            "payload", flat=True
        ):
            usage += int((payload.get("usage") or {}).get("output_tokens") or 0)
        return usage

    def _plain(self, fixture: BenchFixture, body: int) -> tuple[int, int]:
        _seconds, run_id = self._execute(fixture, body, "go")
        return fixture.rows_for([run_id]), self._tokens(run_id)

    def _iteration(self, fixture: BenchFixture, parent: int, items: int) -> tuple[float, int, int]:
        text = json.dumps([f"item {i}" for i in range(items)])
        seconds, run_id = self._execute(fixture, parent, text)
        return seconds, fixture.rows_for([run_id]), self._tokens(run_id)

    def _report(self, result: dict[str, Any]) -> None:
        m = result["median"]
        self.stdout.write(
            f"\nbench_iteration — {result['items']} items, concurrency {result['concurrency']}, "
            f"{result['tokens_per_answer']} tokens each, database {result['database']}, "
            f"medians of {len(result['repeats'])}\n"
        )
        self.stdout.write("| | value |\n|---|---|")
        self.stdout.write(f"| plain asyncio program (the limit) | {m['limit_s']:.2f} s |")
        self.stdout.write(f"| iteration run (engine, sink, database) | {m['iteration_s']:.2f} s |")
        self.stdout.write(f"| ratio (target <= 1.3) | {m['ratio']:.2f} |")
        self.stdout.write(f"| rows per 1,000 tokens, iteration | {m['rows_per_1k_tokens']:.1f} |")
        self.stdout.write(
            f"| rows per 1,000 tokens, one plain run | {result['plain_run_rows_per_1k_tokens']:.1f} |"
        )


async def _limit(base_url: str, items: int, concurrency: int) -> float:
    """Seconds for `items` streamed calls, `concurrency` at once, in plain asyncio."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    model = ChatOpenAI(
        base_url=base_url,
        api_key=SecretStr("bench"),
        model="fake",
        max_retries=0,
        streaming=True,
        stream_usage=True,
        stream_chunk_timeout=None,
    )
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with gate:
            return "".join([str(c.content) async for c in model.astream(f"item {i}")])

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(items)))
    return time.perf_counter() - start
