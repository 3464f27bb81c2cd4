"""CPU-bound functions for the CPU pool's tests, importable without Django (the pool's
forkserver children import this module to run them)."""

from __future__ import annotations


def spin_forever() -> None:
    while True:
        pass


def double(n: int) -> int:
    return n * 2


def fail(message: str) -> None:
    raise ValueError(message)
