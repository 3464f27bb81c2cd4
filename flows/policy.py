"""A node's policy: how often it is retried, how long it may take, what its failure does.

The policy sits beside a node's params in the graph (`{"id", "component", "params",
"policy"?}`), not inside them, so it applies to every component alike and no component
declares it (docs/protocol.md, "Node policy"). Absent, it is today's behaviour: one
attempt, no timeout of its own, and a failure fails the run.

- `retries` (0-5) more attempts after a failure whose class is in `retry_on`, each after
  a backoff of `backoff_seconds` doubled per retry, capped at MAX_BACKOFF_SECONDS and
  jittered (half fixed, half random, so many runs failing together do not retry in step);
- `retry_on`: the failure classes worth another attempt (RETRYABLE); a node's own errors
  (a bad param, an empty prompt), a budget that ran out and a cancel never are;
- `timeout_seconds`: each attempt's wall time; an attempt that takes longer fails with
  the class `timeout`;
- `on_failure`: `stop` (the run fails), `error_port` (the node gets an output port
  `error` carrying {message, code}: what hangs off it runs, what hangs off its other
  outputs is skipped, and the run can succeed) or `fallback` (the node's output is the
  fixed JSON value `fallback`, given as the node's `node_finished` data would be).
"""

from __future__ import annotations

import json
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.components.base import Port
from flows.messages import param_message

# Failure classes that may be retried: a provider's 5xx, its 429, a timeout (the
# provider's or the node's own) and a connection that failed or broke off.
Retryable = Literal["server_error", "rate_limited", "timeout", "connection"]
RETRYABLE: tuple[Retryable, ...] = ("server_error", "rate_limited", "timeout", "connection")
MAX_RETRIES = 5
MAX_BACKOFF_SECONDS = 60.0
MAX_TIMEOUT_SECONDS = 3600.0
MAX_FALLBACK_BYTES = 64 * 1024
ERROR_PORT = "error"
ON_FAILURE = ("stop", "error_port", "fallback")

# The labels the editor's "Policy" section shows, for problems that name a field.
TITLES = {
    "retries": "Retries",
    "backoff_seconds": "Backoff (s)",
    "retry_on": "Retry on",
    "timeout_seconds": "Timeout (s)",
    "on_failure": "On failure",
    "fallback": "Fallback value",
}


class NodePolicy(BaseModel):
    """A node's policy (see the module docstring); the default is no policy at all."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    retries: int = Field(0, ge=0, le=MAX_RETRIES)
    backoff_seconds: float = Field(1.0, ge=0.0, le=MAX_BACKOFF_SECONDS)
    retry_on: list[Retryable] = Field(
        default_factory=lambda: list(RETRYABLE), max_length=len(RETRYABLE)
    )
    timeout_seconds: float | None = Field(None, ge=0.1, le=MAX_TIMEOUT_SECONDS)
    on_failure: Literal["stop", "error_port", "fallback"] = "stop"
    fallback: Any = None

    @property
    def attempts(self) -> int:
        return self.retries + 1

    @property
    def has_error_port(self) -> bool:
        return self.on_failure == "error_port"


DEFAULT_POLICY = NodePolicy()


def error_port() -> Port:
    """The extra output of a node whose policy says `error_port`."""
    return Port(ERROR_PORT, "json", label="Error", description="{message, code}")


def policy_problems(
    raw: Any, output_ports: list[Port]
) -> tuple[NodePolicy | None, list[tuple[str, str, str]]]:
    """The node's policy from its graph's `policy` value, or None with its problems as
    (field, code, message); `output_ports` are the component's own for its params."""
    if raw is None:
        return DEFAULT_POLICY, []
    if not isinstance(raw, dict):
        return None, [("policy", "invalid_policy", "`policy` is an object.")]
    try:
        policy = NodePolicy.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(part) for part in error.get("loc", ())) or "policy"
            code = "unknown_policy" if error.get("type") == "extra_forbidden" else "invalid_policy"
            message = param_message(dict(error), TITLES)[:300]
            if error.get("type") == "extra_forbidden":
                message = f"“{str(error['loc'][-1])[:60]}” is not part of a node's policy."
            elif loc.startswith("retry_on") and error.get("type") == "literal_error":
                message = (
                    "“Retry on” names failures worth another attempt: "
                    f"{', '.join(RETRYABLE)} (a node's own errors are never retried)."
                )
            problems.append((f"policy.{loc}"[:120], code, message))
        return None, problems
    problems = []
    if len(set(policy.retry_on)) != len(policy.retry_on):
        problems.append(("policy.retry_on", "invalid_policy", "“Retry on” names a failure twice."))
    names = {port.name for port in output_ports}
    if policy.has_error_port and ERROR_PORT in names:
        problems.append(
            (
                "policy.on_failure",
                "invalid_policy",
                "This node already has an output named “error”: rename it, or choose another "
                "“On failure”.",
            )
        )
    if policy.on_failure == "fallback":
        problems.extend(_fallback_problems(policy.fallback, output_ports))
    elif "fallback" in raw:
        problems.append(
            (
                "policy.fallback",
                "invalid_policy",
                "A fallback value is used only when “On failure” is fallback: remove it.",
            )
        )
    return (None if problems else policy), problems


def _fallback_problems(value: Any, output_ports: list[Port]) -> list[tuple[str, str, str]]:
    def problem(message: str) -> list[tuple[str, str, str]]:
        return [("policy.fallback", "invalid_policy", message)]

    if value is None:
        return problem("“On failure: fallback” needs a fallback value (any JSON but null).")
    if len(json.dumps(value).encode()) > MAX_FALLBACK_BYTES:
        return problem(f"The fallback value is larger than {MAX_FALLBACK_BYTES // 1024} KB.")
    if not output_ports:
        return problem("This node has no output for a fallback value to stand in for.")
    if len(output_ports) > 1:
        names = [port.name for port in output_ports]
        if not (isinstance(value, dict) and value and set(value) <= set(names)):
            return problem(
                "This node has several outputs: its fallback value is an object naming some of "
                f"them ({', '.join(names[:10])}) with each one's value."
            )
    return []


def backoff_delay(policy: NodePolicy, retry: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `retry` (1 for the first): the base doubled per
    retry, capped, then jittered between half and all of it."""
    ceiling = min(MAX_BACKOFF_SECONDS, policy.backoff_seconds * 2 ** (retry - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)  # noqa: S311 (not a secret)
