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

from flows.fake_openai import FakeOpenAIServer


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True)
    args = parser.parse_args()
    server = StampingServer(args.tokens, args.interval)
    server.start()
    print(f"fake LLM server listening on {server.base_url}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
