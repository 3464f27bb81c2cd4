"""Sections -> chunk drafts, with LangChain's recursive character splitter.

The separators are tried in order: paragraphs, lines, then sentence punctuation. Chinese
(and Japanese) text has no spaces between words, so without its own punctuation in the
list a long Chinese paragraph would be cut at an arbitrary character; with it, a chunk ends
at 。！？ when one is in reach, then at ；：，、, and only then mid-clause. Punctuation stays
at the end of the sentence it closes (`keep_separator="end"`).

A chunk never spans two sections, so it keeps its section's page and heading, and
sections can be split as they arrive (`iter_chunks`: ingestion embeds a PDF's first pages
while the later ones are parsed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterable
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from knowledge.parsing import Section

__all__ = ["SEPARATORS", "ChunkDraft", "content_hash", "iter_chunks", "split_sections"]

SEPARATORS: list[str] = [
    "\n\n",
    "\n",
    # Chinese and full-width sentence ends, then clause breaks (！？；，：are the full-width
    # forms; ．is the full-width full stop).
    "。",
    "！",
    "？",
    "．",
    "；",
    "：",
    "，",
    "、",
    # ASCII: with the space after, so 3.14, e.g. and URLs stay whole.
    ". ",
    "! ",
    "? ",
    "; ",
    ": ",
    ", ",
    " ",
    "",
]


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it is stored: its position in the document, text, where it came from
    and the sha256 hex digest of its text (deduplication)."""

    index: int
    text: str
    page: int | None
    heading: str | None
    content_hash: str


def content_hash(text: str) -> str:
    """The sha256 hex digest of `text` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_sections(
    sections: list[Section], *, chunk_size: int, chunk_overlap: int
) -> list[ChunkDraft]:
    """Split each section into chunks of at most `chunk_size` characters (where the
    separators allow), neighbours sharing up to `chunk_overlap` characters; indices run
    0..n-1 over the whole document. Raises ValueError for sizes that make no sense."""
    return list(iter_chunks(sections, chunk_size=chunk_size, chunk_overlap=chunk_overlap))


def iter_chunks(
    sections: Iterable[Section], *, chunk_size: int, chunk_overlap: int
) -> Generator[ChunkDraft, None, None]:
    """`split_sections`, a section at a time as `sections` yields them. The sizes are
    checked at once (ValueError), before any section is read."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError("chunk_overlap must be at least 0 and smaller than chunk_size")
    splitter = RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        keep_separator="end",
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        length_function=len,
        strip_whitespace=True,
    )
    return _drafts(sections, splitter)


def _drafts(
    sections: Iterable[Section], splitter: RecursiveCharacterTextSplitter
) -> Generator[ChunkDraft, None, None]:
    index = 0
    for section in sections:
        for piece in splitter.split_text(section.text):
            text = piece.strip()
            if not text:
                continue
            yield ChunkDraft(
                index=index,
                text=text,
                page=section.page,
                heading=section.heading,
                content_hash=content_hash(text),
            )
            index += 1
