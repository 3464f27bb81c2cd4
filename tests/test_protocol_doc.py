"""docs/protocol.md is the public contract, and it cannot drift from the code: every
message the socket takes, every run event in the registry and every `rejected` code the
server can send is documented there, and nothing documented is gone from the code."""

from __future__ import annotations

import re
from pathlib import Path

from runs import schemas
from runs.events import EVENT_TYPES

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text()
PRODUCT = ("accounts", "audit", "config", "flows", "runs")
REFUSAL = re.compile(r"\b(?:Rejected|RunRefused|MessageRefused|ApprovalRefused)\(\s*\"([a-z_]+)\"")


def _section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n#", start + len(title))
    return DOC[start : end if end != -1 else None]


def _table_keys(section: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)`", section, re.M))


def _codes_in_code() -> set[str]:
    codes = set(schemas.FIELD_CODES.values())
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            codes |= set(REFUSAL.findall(path.read_text()))
    return codes


def test_every_action_is_documented():
    documented = set(re.findall(r'"action": "([a-z_]+)"', _section("### Client → server")))
    assert documented == set(schemas.ACTIONS)


def test_every_event_of_the_registry_is_documented_and_only_those():
    assert _table_keys(_section("### Server → client")) == set(EVENT_TYPES)


def test_every_rejected_code_the_server_sends_is_documented_and_only_those():
    in_code = _codes_in_code()
    assert {"unknown_action", "invalid_graph", "too_many_runs"} <= in_code  # the scan works
    assert _table_keys(_section("### `rejected` codes")) == in_code
