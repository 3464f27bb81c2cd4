"""How many tokens a run may still spend: the engine's side of budgets.

The budgets themselves live in the `usage` app (which depends on runs, not back): it
registers an allowance function at start-up. The engine asks it once, when a run starts
(refused when nothing is left) and when the run begins executing; from then on the run
counts in memory (each streamed chunk one output token, reconciled with the provider's
reported usage when a call ends) and stops its model calls once the allowance is spent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# (workspace id, API key id or None) -> tokens left this month (None: no budget).
AllowanceFunction = Callable[[int, int | None], int | None]
_functions: list[AllowanceFunction] = []


class BudgetExceeded(Exception):
    """The run's spend crossed its workspace's budget: no further model calls."""


def register_allowance(function: AllowanceFunction) -> None:
    if function not in _functions:
        _functions.append(function)


def tokens_left(workspace_id: int, api_token_id: int | None = None) -> int | None:
    """The fewest tokens any registered budget leaves the workspace, or a run started with
    that API key (None: unlimited)."""
    left = [n for n in (f(workspace_id, api_token_id) for f in _functions) if n is not None]
    return min(left) if left else None


class Allowance:
    """One run's tokens left, shared by its nodes (they run on one loop; the lock is for
    the odd component that streams from a thread)."""

    def __init__(self, tokens: int | None) -> None:
        self.tokens = tokens
        self._lock = threading.Lock()

    @property
    def spent(self) -> bool:
        return self.tokens is not None and self.tokens <= 0

    def spend(self, tokens: int) -> bool:
        """Take `tokens` (may be negative: a reconciliation giving back); True once the
        allowance is exhausted."""
        if self.tokens is None:
            return False
        with self._lock:
            self.tokens -= tokens
            return self.tokens < 0
