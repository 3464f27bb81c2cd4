"""A latency-stamping fake OpenAI server for `bench_stream` (a dev tool, never in production).

Each token is produced just before it is written and carries the wall-clock time
(`@<unix time> `), so the receiving client can compute end-to-end delivery latency.
Pacing happens in the token iterator (the server's own delay is 0) so the stamp is the
send time. Runs as its own process so it does not share a GIL with the measuring client.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

from tests.fakes.fake_openai import FakeOpenAIServer


class StampedTokens:
    def __init__(self, n: int, interval: float) -> None:
        self.n = n
        self.interval = interval

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[str]:
        for _ in range(self.n):
            time.sleep(self.interval)
            yield f"@{time.time():.6f} "


class StampingServer(FakeOpenAIServer):
    def __init__(self, tokens: int, interval: float, **kwargs: Any) -> None:
        super().__init__(delay=0.0, **kwargs)
        self.stamped = (tokens, interval)

    def _tokens_for(self, body: dict) -> Any:
        return StampedTokens(*self.stamped)


def raw_concurrent(base_url: str, clients: int) -> dict[str, float]:
    """The baseline for the concurrent case: `clients` threads in one process, each
    streaming with `ChatOpenAI.stream` from the stamping server; delivery latency in ms."""
    import json
    import statistics
    import threading

    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    latencies: list[float] = []

    def one() -> None:
        model = ChatOpenAI(
            base_url=base_url, api_key=SecretStr("bench"), model="fake", max_retries=0
        )
        for chunk in model.stream("go"):
            now = time.time()
            for part in str(chunk.content).split():
                latencies.append((now - float(part[1:])) * 1000)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)
    result = {
        "latency_p50_ms": statistics.median(ordered),
        "latency_p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "tokens": len(ordered),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--raw-clients", type=int, default=0, help="run the raw baseline")
    parser.add_argument("--url", default="", help="with --raw-clients: the server's base URL")
    args = parser.parse_args()
    if args.raw_clients:
        raw_concurrent(args.url, args.raw_clients)
        return
    server = StampingServer(args.tokens, args.interval)
    server.start()
    print(f"fake LLM server listening on {server.base_url}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
