"""Validation problems as sentences a builder of flows can act on.

The builder's `Problem.field` stays machine-readable (`params.rules.0.pattern`): the editor
uses it to find the node and the field. The `message` is for people: it names the field
by its label ("Rule 1 pattern", "Delay ms"), says what is wrong and what is allowed, and
never shows pydantic's or RE2's own wording, a JSON path or a raw regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# Patterns of the product's own params, said in words (a pattern is not an explanation).
PATTERN_RULES: dict[str, str] = {
    r"^[A-Za-z_][A-Za-z0-9_]{0,31}$": (
        "use 1-32 letters, digits or _, starting with a letter or _ (for example: human)"
    ),
    r"^[A-Za-z0-9_-]{1,64}$": "use 1-64 letters, digits, - or _",
}


def humanize(name: str) -> str:
    """`delay_ms` -> "Delay ms"; `default_output` -> "Default output"."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else name


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") and len(name) > 1 else name


def field_label(loc: Sequence[Any], titles: dict[str, str] | None = None) -> str:
    """A pydantic error location in words: ("rules", 0, "pattern") -> "Rule 1 pattern"."""
    titles = titles or {}
    words: list[str] = []
    parent = ""
    for part in loc:
        if isinstance(part, int):
            words.append(f"{humanize(_singular(parent))} {part + 1}")
            if len(words) > 1 and words[-2] == humanize(parent):
                del words[-2]
        else:
            part = str(part)
            label = titles.get(part) if not words else None
            words.append(label or (humanize(part) if not words else part.replace("_", " ")))
            parent = part
    return " ".join(words)[:80] or "This parameter"


def _quoted(label: str) -> str:
    return f"“{label}”"


def param_message(error: dict[str, Any], titles: dict[str, str] | None = None) -> str:
    """One pydantic error of a node's params as a sentence."""
    loc = tuple(error.get("loc", ()))
    label = _quoted(field_label(loc, titles))
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{_quoted(str(loc[-1])[:60] if loc else '?')} is not a parameter of this component."
    if kind == "missing":
        return f"{label} is required."
    if kind == "string_too_short":
        minimum = ctx.get("min_length", 1)
        if minimum == 1:
            return f"{label} can't be empty."
        return f"{label} needs at least {minimum} characters."
    if kind == "string_too_long":
        return f"{label} is too long: at most {ctx.get('max_length')} characters."
    if kind == "string_pattern_mismatch":
        rule = PATTERN_RULES.get(str(ctx.get("pattern", "")), "it has characters it can't use")
        return f"{label} is not allowed: {rule}."
    if kind in {"greater_than_equal", "greater_than"}:
        bound = ctx.get("ge", ctx.get("gt"))
        return (
            f"{label} must be at least {bound}."
            if kind.endswith("equal")
            else (f"{label} must be more than {bound}.")
        )
    if kind in {"less_than_equal", "less_than"}:
        bound = ctx.get("le", ctx.get("lt"))
        return (
            f"{label} must be at most {bound}."
            if kind.endswith("equal")
            else (f"{label} must be less than {bound}.")
        )
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"{label} must be a whole number."
    if kind in {"float_type", "float_parsing", "finite_number"}:
        return f"{label} must be a number."
    if kind in {"bool_type", "bool_parsing"}:
        return f"{label} must be on or off (true or false)."
    if kind in {"string_type", "string_unicode"}:
        return f"{label} must be text."
    if kind in {"list_type"}:
        return f"{label} must be a list."
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"{label} must be an object."
    if kind == "too_long":
        return f"{label} can have at most {ctx.get('max_length')} entries."
    if kind == "too_short":
        return f"{label} needs at least {ctx.get('min_length')} entries."
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"{label} must be one of: {expected}."
    if kind == "enum":
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"{label} must be one of: {expected}."
    return f"{label} has a value it can't use."


# RE2's error strings (re2/re2.h ErrorCode texts) in words.
_RE2_REASONS: list[tuple[str, str]] = [
    ("missing )", "a “(” is never closed"),
    ("unexpected )", "there is a “)” without a matching “(”"),
    ("missing ]", "a “[” is never closed"),
    ("invalid perl operator", "lookaround such as (?=…), (?!…) or (?<=…) is not supported"),
    (
        "invalid escape sequence",
        "it uses an escape RE2 does not know (backreferences like \\1 are not supported)",
    ),
    ("trailing \\", "it ends with a lone backslash"),
    ("missing argument to repetition operator", "a *, + or ? has nothing before it to repeat"),
    ("bad repetition operator", "two repetition operators follow each other (like a**)"),
    ("invalid repetition size", "a {n,m} repetition is out of range (at most 1000)"),
    ("invalid character class range", "a character range like z-a runs backwards"),
    ("invalid character class", "a character class […] is malformed"),
    ("invalid named capture group", "a named group is malformed: write (?P<name>…)"),
    ("duplicate capture group name", "two groups have the same name"),
    ("invalid UTF-8", "it is not valid text"),
    ("pattern too large", "it is too large to run safely"),
]


def regex_reason(raw: str) -> str:
    """RE2's reason for refusing a pattern, said in words (no pattern echoed back)."""
    lowered = raw.lower()
    for needle, words in _RE2_REASONS:
        if needle.lower() in lowered:
            return words
    return "it is not valid RE2 syntax"


_WHITESPACE = re.compile(r"\s+")


def one_line(text: str, limit: int = 300) -> str:
    return _WHITESPACE.sub(" ", text).strip()[:limit]
