"""Regular expressions on user input run on RE2, whose matching time is linear in the text.

Python's `re` backtracks: a user's `(a|a)*$` or `((a+))+$` takes seconds on a few dozen
characters and holds the worker's shared run loop (and the GIL) while it does, so every
run of every tenant on that worker stalls. No syntactic "unsafe pattern" check catches
every such shape, so user patterns are never given to `re` at all: they are compiled by
RE2 (google-re2), which has no backtracking and refuses what it cannot match in linear
time (backreferences, lookaround). The same goes for the product's own patterns that scan
user text of unbounded size: `compile_trusted` gives them the same engine.

RE2's `\\w`, `\\d` and `\\b` are ASCII-only; `\\p{L}` / `\\p{Han}` match letters of any
script (documented in the router's help).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

from flows.messages import regex_reason

MAX_PATTERN_CHARS = 200
# RE2's compiled program budget: a pattern whose automaton would need more is refused
# (e.g. `(a{100}){100}`), so no pattern can make a match use unbounded memory.
MAX_PROGRAM_BYTES = 1 << 20


class PatternError(ValueError):
    """The pattern cannot be used; the message is user-facing."""


def _options(*, case_sensitive: bool, dot_all: bool = False) -> Any:
    options = re2.Options()
    options.log_errors = False  # a user's typo is not the server's error log
    options.max_mem = MAX_PROGRAM_BYTES
    options.case_sensitive = case_sensitive
    options.dot_nl = dot_all
    return options


def _reason(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return str(detail) or "invalid pattern"


@lru_cache(maxsize=512)
def compile_user_pattern(pattern: str, *, case_sensitive: bool = True) -> Any:
    """`pattern` compiled on RE2; PatternError (with RE2's reason) if it is not valid RE2
    syntax or needs more than the memory budget."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("The pattern is empty.")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"Patterns are limited to {MAX_PATTERN_CHARS} characters.")
    try:
        return re2.compile(pattern, _options(case_sensitive=case_sensitive))
    except re2.error as exc:
        # In words, not RE2's own text (which echoes the pattern back): the editor shows it.
        raise PatternError(
            f"The regular expression can't be used: {regex_reason(_reason(exc))}."
        ) from exc


def compile_trusted(pattern: str, *, case_sensitive: bool = True, dot_all: bool = False) -> Any:
    """One of the product's own patterns, on RE2 because it scans unbounded user text."""
    return re2.compile(pattern, _options(case_sensitive=case_sensitive, dot_all=dot_all))


# A word character in the Unicode sense (what Python's `\w` means), and the scripts
# written without spaces between words: a keyword ending in one of those is found inside
# a sentence (订单 in 我想查询订单状态), any other keyword only as a whole word.
_WORD = r"[\p{L}\p{N}_]"
_UNSPACED = re2.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}]")


def _keyword_regex(word: str) -> str:
    body = re2.escape(word)
    before = (
        ""
        if _UNSPACED.match(word[0]) or not re2.match(_WORD, word[0])
        else f"(?:^|[^{_WORD[1:-1]}])"
    )
    after = (
        ""
        if _UNSPACED.match(word[-1]) or not re2.match(_WORD, word[-1])
        else f"(?:$|[^{_WORD[1:-1]}])"
    )
    return before + body + after


@lru_cache(maxsize=512)
def compile_keywords(keywords: tuple[str, ...], *, case_sensitive: bool = False) -> Any:
    """One RE2 pattern that finds any of `keywords` as a whole word (or, for Chinese and
    Japanese, anywhere), in one linear pass over the text."""
    alternatives = "|".join(f"(?:{_keyword_regex(word)})" for word in keywords if word)
    return compile_trusted(alternatives or "$^", case_sensitive=case_sensitive)
