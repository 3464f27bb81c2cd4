"""How the demo model cuts a reply into stream tokens.

Product code (`llm.demo` streams its reply with it). The fake provider server in
tests/fakes/fake_openai.py streams its replies the same way, so a test can compare what the
demo model and a real provider client deliver; it imports this, never the other way round.
"""

from __future__ import annotations

import re

_TOKEN_RE = re.compile(r"\s*\S+|\s+$")


def split_tokens(text: str) -> list[str]:
    """Words with their leading whitespace: "a b" -> ["a", " b"] (joins back to `text`)."""
    return _TOKEN_RE.findall(text) or [""]
