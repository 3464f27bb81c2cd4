"""`manage.py bench_run_page`: the admin run page and the run export on a 100,000-event run.

Creates a throwaway staff user, workspace, flow and one finished run whose log holds
`--events` events (bulk insert: three nodes, the model streaming tokens with tool calls
among them), then measures through the Django test client, in this process, against the
configured database:

- the admin run page, first page and a deep page (`?after=<half>`): wall time per render
  (median, p90 and min of `--repeat`) and the number of SQL queries;
- the timeline aggregate alone;
- the workspace export (`/w/<slug>/runs/<id>/export.jsonl`) as a member: events/s and MB/s.

Prints a table, writes JSON to bench-results/bench_run_page.json, and deletes everything it
created (also when interrupted). The export it performs is audited like any other.
Outside DEBUG the admin page needs collected static files (`manage.py collectstatic`), as
in any deployment.
"""

from __future__ import annotations

import json
import platform
import secrets
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, User
from accounts.services import workspace_create
from flows.services import flow_create
from runs import selectors
from runs.models import Run, RunEvent, RunStatus

GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "input", "component": "io.chat_input", "params": {}, "position": {"x": 0, "y": 0}},
        {
            "id": "model",
            "component": "llm.demo",
            "params": {"reply": "bench", "delay_ms": 0},
            "position": {"x": 250, "y": 0},
        },
        {
            "id": "output",
            "component": "io.text_output",
            "params": {},
            "position": {"x": 500, "y": 0},
        },
    ],
    "edges": [
        {"source": "input", "source_port": "text", "target": "model", "target_port": "prompt"},
        {"source": "model", "source_port": "text", "target": "output", "target_port": "text"},
    ],
}
BATCH = 5000


def _client(user: User) -> Client:
    """A test client that passes ALLOWED_HOSTS and HTTPS redirects of real settings."""
    hosts = [h.lstrip(".") for h in settings.ALLOWED_HOSTS if h and h != "*"]
    environ = {"HTTP_HOST": hosts[0] if hosts else "localhost", "wsgi.url_scheme": "https"}
    if settings.SECURE_PROXY_SSL_HEADER:  # behind the TLS proxy, as in production
        header, value = settings.SECURE_PROXY_SSL_HEADER
        environ[header] = value
    client = Client()
    client.defaults.update(environ)  # the WSGI environ of every request it makes
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
    }


class Command(BaseCommand):
    help = "Benchmark the admin run page and the run export on a run with 100,000 events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--events", type=int, default=100_000)
        parser.add_argument("--repeat", type=int, default=9)
        parser.add_argument("--export-repeat", type=int, default=3)
        parser.add_argument("--output", default="bench-results/bench_run_page.json")

    def handle(self, *args: Any, **options: Any) -> None:
        tag = secrets.token_hex(4)
        staff = User.objects.create_superuser(f"bench-staff-{tag}@bench.invalid", None)
        owner = User.objects.create_user(f"bench-owner-{tag}@bench.invalid", None)
        workspace = workspace_create(name=f"bench {tag}", slug=f"bench-{tag}", owner=owner)
        try:
            results = self._bench(workspace, staff, owner, options)
        finally:
            # Runs first: they PROTECT their flow version, which the workspace also cascades to.
            Run.objects.filter(workspace=workspace).delete()
            workspace.delete()
            User.objects.filter(pk__in=[staff.pk, owner.pk]).delete()
        self._report(results, options["output"])

    def _make_run(self, workspace: Any, owner: User, n: int) -> tuple[Run, float]:
        acting = Membership.objects.get(workspace=workspace, user=owner)
        flow = flow_create(workspace=workspace, acting=acting, name="bench flow", graph=GRAPH)
        start = timezone.now() - timedelta(hours=1)
        run = Run.objects.create(
            workspace=workspace,
            flow=flow,
            flow_version=flow.versions.get(),
            session_id="bench",
            started_by=owner,
            inputs={"input": "benchmark"},
            outputs={"output": "bench"},
            status=RunStatus.SUCCEEDED,
            started_at=start,
        )
        plan: list[tuple[str, str, dict]] = [
            ("run_started", "", {"data": {"flow": flow.pk, "version": 1, "protocol": 1}}),
            ("node_started", "input", {"data": {"component": "io.chat_input"}}),
            ("node_finished", "input", {"data": "benchmark", "duration_ms": 1}),
            ("node_started", "model", {"data": {"component": "llm.demo"}}),
        ]
        tail: list[tuple[str, str, dict]] = [
            ("node_finished", "model", {"data": "bench", "duration_ms": n}),
            ("node_started", "output", {"data": {"component": "io.text_output"}}),
            ("node_finished", "output", {"data": "bench", "duration_ms": 1}),
            ("completed", "", {"status": "success"}),
        ]
        middle = n - len(plan) - len(tail)
        began = time.perf_counter()
        seq = 0
        batch: list[RunEvent] = []

        def add(event: str, node_id: str, payload: dict) -> None:
            nonlocal seq
            seq += 1
            batch.append(
                RunEvent(
                    workspace=workspace,
                    run=run,
                    seq=seq,
                    event=event,
                    node_id=node_id,
                    payload=payload,
                    ts=start + timedelta(milliseconds=seq),
                )
            )
            if len(batch) >= BATCH:
                RunEvent.objects.bulk_create(batch)
                batch.clear()

        for row in plan:
            add(*row)
        for i in range(middle):
            if i % 1000 == 500:
                call = {"tool_name": "calculator", "tool_input": {"x": i}, "call_id": f"c{i}"}
                add("on_tool_call", "model", {"data": call})
            else:
                add("on_token", "model", {"data": f"token {i} "})
        for row in tail:
            add(*row)
        if batch:
            RunEvent.objects.bulk_create(batch)
        insert_s = time.perf_counter() - began
        # What autovacuum (PostgreSQL) would do shortly after such a load: without statistics
        # the planner may pick the workspace index and sort a run's whole log for one page.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE runs_runevent")
        Run.objects.filter(pk=run.pk).update(
            last_seq=seq, finished_at=start + timedelta(milliseconds=seq + 1)
        )
        run.refresh_from_db()
        return run, insert_s

    def _time_page(self, client: Client, url: str, repeat: int) -> dict[str, Any]:
        client.get(url)  # warm-up: templates compiled, connection open
        samples, queries = [], []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                response = client.get(url)
                samples.append(time.perf_counter() - began)
            assert response.status_code == 200, response.status_code
            queries.append(len(captured))
        return {**_stats(samples), "queries": max(queries), "bytes": len(response.content)}

    def _bench(self, workspace: Any, staff: User, owner: User, options: dict) -> dict[str, Any]:
        n = options["events"]
        self.stdout.write(f"inserting {n:,} events ...")
        run, insert_s = self._make_run(workspace, owner, n)
        staff_client = _client(staff)
        page_url = reverse("admin:runs_run_change", args=[run.pk])
        first = self._time_page(staff_client, page_url, options["repeat"])
        deep = self._time_page(staff_client, f"{page_url}?after={n // 2}", options["repeat"])

        samples = []
        for _ in range(options["repeat"]):
            began = time.perf_counter()
            selectors.run_timeline(run)
            samples.append(time.perf_counter() - began)
        timeline = _stats(samples)

        member = _client(owner)
        export_url = reverse("run_export", args=[workspace.slug, run.pk])
        exports: list[tuple[float, int, int]] = []
        for _ in range(options["export_repeat"]):
            began = time.perf_counter()
            response = member.get(export_url)
            if not isinstance(response, StreamingHttpResponse):
                raise CommandError(f"the export answered {response.status_code} without a stream")
            size = lines = 0
            for chunk in response.streaming_content:
                size += len(chunk)
                lines += chunk.count(b"\n")
            exports.append((time.perf_counter() - began, size, lines))
        export_s = statistics.median(e[0] for e in exports)
        size, lines = exports[0][1], exports[0][2]
        assert lines == n + 2, (lines, n)
        return {
            "events": n,
            "database": connection.vendor,
            "python": platform.python_version(),
            "insert_seconds": round(insert_s, 2),
            "repeat": options["repeat"],
            "admin_run_page_first": first,
            "admin_run_page_deep": deep,
            "timeline_aggregate": timeline,
            "export": {
                "median_seconds": round(export_s, 3),
                "events_per_second": round(n / export_s),
                "megabytes": round(size / 1e6, 2),
                "megabytes_per_second": round(size / 1e6 / export_s, 2),
                "lines": lines,
            },
            "target_first_page_ms": 1000,
            "first_page_under_target": first["median_ms"] < 1000,
        }

    def _report(self, r: dict[str, Any], output: str) -> None:
        rows = [
            ("admin run page, first page", r["admin_run_page_first"]),
            (f"admin run page, ?after={r['events'] // 2}", r["admin_run_page_deep"]),
        ]
        self.stdout.write(
            f"\nbench_run_page: {r['events']:,} events on {r['database']} "
            f"(insert {r['insert_seconds']} s), {r['repeat']} repetitions\n"
        )
        self.stdout.write(f"{'measure':<34}{'median':>10}{'p90':>10}{'min':>10}{'queries':>9}")
        for name, s in rows:
            self.stdout.write(
                f"{name:<34}{s['median_ms']:>8.1f}ms{s['p90_ms']:>8.1f}ms{s['min_ms']:>8.1f}ms"
                f"{s['queries']:>9}"
            )
        t = r["timeline_aggregate"]
        self.stdout.write(
            f"{'timeline aggregate (1 query)':<34}{t['median_ms']:>8.1f}ms{t['p90_ms']:>8.1f}ms"
            f"{t['min_ms']:>8.1f}ms{1:>9}"
        )
        e = r["export"]
        self.stdout.write(
            f"{'export.jsonl (workspace member)':<34}{e['median_seconds'] * 1000:>8.0f}ms"
            f"  {e['events_per_second']:,} events/s, {e['megabytes']} MB, "
            f"{e['megabytes_per_second']} MB/s"
        )
        verdict = "under" if r["first_page_under_target"] else "OVER"
        self.stdout.write(f"first page median {verdict} the 1 s target\n")
        path = Path(output)
        if not path.is_absolute():
            path = Path(settings.BASE_DIR) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r, indent=2) + "\n")
        self.stdout.write(f"wrote {path}")
