"""Uploaded file -> text sections, with the file's real type checked first.

`parse_file(name, data)` returns a `Parsed`: the format and the text in `Section`s, each
with the page it came from (PDF) or the heading it sits under (DOCX, HTML, Markdown).
`parse_stream(name, data)` does the same work a section at a time: a PDF's pages are read
as they are asked for, so ingestion embeds the first pages while later ones are parsed, and
a long PDF can be read by child processes (`python -m knowledge.parsing`, see
`_PageReader`).
Every way a file can be bad ends in a `ParseError` whose `code` is short and stable (the
ingestion job stores it; the page translates it) and whose message is a sentence a user
can act on. No exception of a parsing library leaves this module.

Formats and the library for each: PDF (pypdf), DOCX (python-docx, after a zip-bomb check
on the archive's own directory), HTML (BeautifulSoup with the standard library's parser),
Markdown (ATX headings split by hand: the text itself is what gets indexed), plain text and
CSV (the standard library). Text files are read as UTF-8 (with or without a BOM), UTF-16
with a BOM, or GB18030 (Chinese text saved by Windows tools).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import queue
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

__all__ = [
    "ERROR_CODES",
    "FORMATS",
    "MAX_ZIP_MEMBERS",
    "MAX_ZIP_RATIO",
    "MAX_ZIP_UNCOMPRESSED",
    "ChildFailed",
    "ParseError",
    "Parsed",
    "Section",
    "SectionStream",
    "parse_file",
    "parse_stream",
    "sniff",
]

# File name extension -> format name.
FORMATS: dict[str, str] = {
    "pdf": "pdf",
    "docx": "docx",
    "html": "html",
    "htm": "html",
    "md": "markdown",
    "markdown": "markdown",
    "txt": "text",
    "csv": "csv",
}
TEXT_FORMATS = frozenset({"html", "markdown", "text", "csv"})

# A DOCX is a zip archive: these bound what opening it may inflate. Real documents are far
# below them (Word's XML compresses 5-20x; a book-length .docx inflates to a few MB).
MAX_ZIP_MEMBERS = 5_000
MAX_ZIP_UNCOMPRESSED = 256 * 1024 * 1024
MAX_ZIP_RATIO = 100
_RATIO_CHECKED_ABOVE = 8 * 1024 * 1024  # small archives may compress well and be harmless

ERROR_CODES = frozenset(
    {
        "empty_file",
        "unsupported_type",
        "type_mismatch",
        "encrypted_pdf",
        "corrupt_file",
        "zip_bomb",
        "no_text",
        "too_large",
    }
)


@dataclass(frozen=True)
class Section:
    """A run of text that shares one page and one heading."""

    text: str
    page: int | None = None
    heading: str | None = None


@dataclass(frozen=True)
class Parsed:
    """A parsed file: its format (a value of `FORMATS`), its sections in reading order, and
    its page count (PDF only)."""

    format: str
    sections: list[Section]
    pages: int | None


@dataclass(frozen=True)
class SectionStream:
    """A file being parsed: its format, its page count (PDF only) and its sections in
    reading order, read as they are asked for (iterating raises `ParseError` for what is
    found wrong on the way, and `no_text` at the end if there was no text at all)."""

    format: str
    pages: int | None
    sections: Generator[Section, None, None]


class ParseError(Exception):
    """A file that cannot be parsed: `code` (one of `ERROR_CODES`) and a sentence for the
    user (`str(error)` / `message`)."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown parse error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[ParseError], tuple[str, str]]:
        # Picklable (a Celery result, a process pool) though __init__ takes two arguments.
        return (type(self), (self.code, self.message))


# --- sniffing ------------------------------------------------------------------------------

_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office (OLE) document"),
    (b"\x7fELF", "a program"),
    (b"MZ\x90\x00", "a Windows program"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
)
_PDF_SEARCH = 1024  # the PDF spec lets `%PDF-` start anywhere in the first kilobyte
_TEXT_SNIFF = 64 * 1024


def _extension(name: str) -> str:
    return PurePath(name).suffix.lower().lstrip(".")


def _what_binary(head: bytes, *, pdf_anywhere: bool = False) -> str | None:
    """What binary format `head` starts with, if any. `pdf_anywhere` looks for `%PDF-` in
    the whole first kilobyte (for a .pdf: some writers put junk first); a text file that
    merely mentions %PDF- is not a PDF."""
    if pdf_anywhere and b"%PDF-" in head[:_PDF_SEARCH]:
        return "a PDF document"
    for magic, what in _BINARY_MAGIC:
        if head.startswith(magic):
            return what
    return None


def _decode_head(head: bytes) -> str | None:
    """The text of `head`'s first 64 KiB (possibly cut mid-character), or None if it is not
    text. The rest of a file is decoded, strictly, when it is parsed."""
    for encoding, data in _encodings(head[:_TEXT_SNIFF]):
        try:
            text = codecs.getincrementaldecoder(encoding)().decode(data, final=False)
        except UnicodeDecodeError:
            continue
        if "\x00" in text or _mostly_control(text):
            return None
        return text
    return None


def _encodings(data: bytes) -> Iterator[tuple[str, bytes]]:
    if data.startswith(codecs.BOM_UTF8):
        yield "utf-8", data[len(codecs.BOM_UTF8) :]
        return
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        yield "utf-16", data
        return
    yield "utf-8", data
    yield "gb18030", data


def _mostly_control(text: str) -> bool:
    sample = text[:4096]
    if not sample:
        return False
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    return controls / len(sample) > 0.05


def _zip_names(data: bytes) -> list[str] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return None


def sniff(name: str, head: bytes) -> str:
    """The format of a file named `name` whose first bytes are `head` (pass the whole file
    to check a DOCX's members; a head cut short is accepted as a DOCX on its zip magic).

    Raises `ParseError`: `unsupported_type` for an extension not in `FORMATS`,
    `empty_file`, and `type_mismatch` when the content is not what the extension says."""
    extension = _extension(name)
    fmt = FORMATS.get(extension)
    if fmt is None:
        supported = ", ".join(sorted({f".{ext}" for ext in FORMATS}))
        raise ParseError(
            "unsupported_type",
            f"“{name}” is not a supported file type. Upload one of: {supported}.",
        )
    if not head:
        raise ParseError("empty_file", f"“{name}” is empty.")
    binary = _what_binary(head, pdf_anywhere=fmt == "pdf")
    if fmt == "pdf":
        if binary != "a PDF document":
            found = binary or ("text" if _decode_head(head) is not None else "not a PDF")
            raise _mismatch(name, "a PDF document", found)
        return fmt
    if fmt == "docx":
        if binary != "a zip archive":
            found = binary or ("text" if _decode_head(head) is not None else "not a DOCX")
            raise _mismatch(name, "a Word (.docx) document", found)
        names = _zip_names(head)
        if names is not None and "word/document.xml" not in names:
            raise _mismatch(name, "a Word (.docx) document", "a zip archive without a document")
        return fmt
    # The text formats.
    if binary is not None:
        raise _mismatch(name, "a text file", binary)
    if _decode_head(head) is None:
        raise _mismatch(
            name, "a text file", "binary data or text in an encoding other than UTF-8 or GB18030"
        )
    return fmt


def _mismatch(name: str, expected: str, found: str) -> ParseError:
    return ParseError(
        "type_mismatch",
        f"“{name}” is named like {expected} but its content is {found}.",
    )


# --- parsing -------------------------------------------------------------------------------


class _Collector:
    """Sections in reading order, with the running character count held to `max_chars`."""

    def __init__(self, name: str, max_chars: int) -> None:
        self.name = name
        self.max_chars = max_chars
        self.total = 0
        self.sections: list[Section] = []

    def section(
        self, text: str, *, page: int | None = None, heading: str | None = None
    ) -> Section | None:
        """The cleaned section (None when no text is left), counted against the limit."""
        text = _clean(text)
        if not text:
            return None
        self.total += len(text)
        if self.total > self.max_chars:
            raise ParseError(
                "too_large",
                f"“{self.name}” holds more than {self.max_chars:,} characters of text; "
                "split it into smaller files.",
            )
        return Section(text=text, page=page, heading=heading or None)

    def add(self, text: str, *, page: int | None = None, heading: str | None = None) -> None:
        section = self.section(text, page=page, heading=heading)
        if section is not None:
            self.sections.append(section)


_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; PDFs' text layers sometimes carry it.
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def parse_file(name: str, data: bytes, *, max_chars: int = 5_000_000) -> Parsed:
    """Parse the uploaded file `name` with content `data` (see the module docstring).

    Raises `ParseError` for every bad file; nothing else escapes."""
    stream = parse_stream(name, data, max_chars=max_chars)
    sections = list(stream.sections)
    return Parsed(format=stream.format, sections=sections, pages=stream.pages)


def parse_stream(
    name: str,
    data: bytes,
    *,
    max_chars: int = 5_000_000,
    child_from_pages: int = 0,
    children: int = 1,
) -> SectionStream:
    """`parse_file`'s work a section at a time. The type is checked and a PDF opened (its
    password, its page count) before this returns; a PDF's pages are extracted as the
    sections are iterated, the other formats (fast to parse) are parsed here.

    A PDF of at least `child_from_pages` pages (0: none) is read by child processes, up to
    `children` of them (one per `child_from_pages` pages), each a contiguous range of its
    pages: pypdf is pure Python, and in this process it would hold the interpreter's lock
    for seconds, slowing every thread beside it (the embedding requests of the same
    ingestion, the other tasks of a worker), and on one core at that; a file that exhausts
    memory takes only a child down.

    Raises `ParseError`, here or while iterating; nothing else escapes but `ChildFailed`
    (the child process could not run at all: a broken installation, not a bad file)."""
    fmt = sniff(name, data)
    out = _Collector(name, max_chars)
    if fmt == "pdf":
        with _library_errors(name):
            reader = _open_pdf(name, data)
            pages = len(reader.pages)
        if child_from_pages and pages >= child_from_pages:
            # The first pages are read here while the children start (a few tenths of a
            # second: an interpreter and pypdf to load); they share the rest.
            head = min(_HEAD_PAGES, pages // 4)
            count = max(1, min(children, (pages - head) // child_from_pages))
            bounds = [head + (pages - head) * i // count for i in range(count + 1)]
            ranges = list(zip(bounds, bounds[1:], strict=False))
            sections = _pdf_sections_in_children(name, data, out, reader, head, ranges)
        else:
            sections = _pdf_sections(reader, out)
        return SectionStream(fmt, pages, _checked(name, fmt, sections))
    with _library_errors(name):
        if fmt == "docx":
            _parse_docx(name, data, out)
        else:
            text = _decode(name, data, max_chars)
            if fmt == "html":
                _parse_html(text, out)
            elif fmt == "markdown":
                _parse_markdown(text, out)
            elif fmt == "csv":
                _parse_csv(text, out)
            else:
                out.add(text)
    return SectionStream(fmt, None, _checked(name, fmt, iter(out.sections)))


@contextmanager
def _library_errors(name: str) -> Iterator[None]:
    """A parsing library's own error on a malformed file, as a `ParseError`."""
    try:
        yield
    except (ParseError, ChildFailed):
        raise
    except RecursionError as error:
        raise ParseError("corrupt_file", f"“{name}” is nested too deeply to read.") from error
    except MemoryError as error:
        raise ParseError("too_large", f"“{name}” is too large to read.") from error
    except Exception as error:
        raise ParseError(
            "corrupt_file", f"“{name}” could not be read: the file is damaged or malformed."
        ) from error


def _checked(name: str, fmt: str, sections: Iterator[Section]) -> Generator[Section, None, None]:
    found = False
    while True:
        with _library_errors(name):
            section = next(sections, None)
        if section is None:
            break
        found = True
        yield section
    if not found:
        hint = " (a scanned PDF needs text recognition first)" if fmt == "pdf" else ""
        raise ParseError("no_text", f"“{name}” contains no text that can be extracted{hint}.")


def _decode(name: str, data: bytes, max_chars: int) -> str:
    for encoding, body in _encodings(data):
        try:
            text = body.decode(encoding)
        except UnicodeDecodeError:
            continue
        if len(text) > max_chars:
            raise ParseError(
                "too_large",
                f"“{name}” holds more than {max_chars:,} characters of text; "
                "split it into smaller files.",
            )
        return text
    raise ParseError(
        "type_mismatch",
        f"“{name}” is not valid text: save it as UTF-8 (or GB18030) and upload it again.",
    )


# PDF ---------------------------------------------------------------------------------------


def _open_pdf(name: str, data: bytes) -> Any:
    # The parsing libraries load on first use: web processes that never parse stay lean.
    from pypdf import PasswordType, PdfReader

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        # Many PDFs are "encrypted" only against editing: they open with the empty password.
        try:
            opened = reader.decrypt("")
        except Exception as error:
            raise _encrypted(name) from error
        if opened == PasswordType.NOT_DECRYPTED:
            raise _encrypted(name)
    return reader


def _pdf_sections(reader: Any, out: _Collector) -> Iterator[Section]:
    for number, page in enumerate(reader.pages, start=1):
        section = out.section(page.extract_text() or "", page=number)
        if section is not None:
            yield section


class ChildFailed(RuntimeError):
    """The child process that reads a PDF's pages exited without a word (it could not
    start, or crashed in Python itself): the installation's fault, not the file's."""


# A long PDF's first pages are read in the caller's process while the children start.
_HEAD_PAGES = 25
# The directory that holds this package: the child runs from it, so it imports this very
# code (a checkout, an installed wheel alike).
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _pdf_sections_in_children(
    name: str,
    data: bytes,
    out: _Collector,
    pdf: Any,
    head: int,
    ranges: list[tuple[int, int]],
) -> Iterator[Section]:
    """The PDF's pages: the first `head` read here from `pdf` (opened already), the rest by
    a child process per range (first page, end; from 0), all started at once; pages are
    yielded in order. Every child is killed when the sections are no longer wanted (an
    error, a limit, a lost lease)."""
    readers = [_PageReader(name, data, first, end) for first, end in ranges]
    try:
        for number in range(head):
            with _library_errors(name):
                section = out.section(pdf.pages[number].extract_text() or "", page=number + 1)
            if section is not None:
                yield section
        for reader in readers:
            yield from reader.sections(out)
    finally:
        for reader in readers:
            reader.stop()


class _PageReader:
    """`python -m knowledge.parsing` (`_child_main`) reading a range of a PDF's pages: a
    JSON line (the file's name and the range) and the file go to its standard input, each
    page comes back as a JSON line as soon as it is read. A thread here feeds the child and
    takes the lines off its pipe as they come, so the child reads on while the caller is
    busy with what it got (the text held meanwhile is bounded by the file's)."""

    def __init__(self, name: str, data: bytes, first: int, end: int) -> None:
        self.name = name
        self.proc = subprocess.Popen(  # noqa: S603 (this interpreter, a fixed module, no shell)
            [sys.executable, "-m", "knowledge.parsing"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # pypdf's warnings on odd files; a pipe could fill up
            cwd=_PACKAGE_ROOT,
        )
        self.lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        head = json.dumps({"name": name, "first": first, "end": end}).encode() + b"\n"
        threading.Thread(
            target=self._run, args=(head + data,), name="pdf-pages", daemon=True
        ).start()

    def _run(self, payload: bytes) -> None:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        try:
            assert stdin is not None and stdout is not None
            # The child reads all of its input before it writes: no deadlock.
            stdin.write(payload)
            stdin.close()
            for line in stdout:
                self.lines.put(line)
        except (OSError, ValueError):  # the child died, or was killed: its status tells
            pass
        finally:
            self.lines.put(None)

    def sections(self, out: _Collector) -> Iterator[Section]:
        for line in iter(self.lines.get, None):
            message = json.loads(line)
            if "error" in message:
                raise ParseError(message["error"], message["message"])
            section = out.section(message["text"], page=message["page"])
            if section is not None:
                yield section
        status = self.proc.wait()
        if status < 0:  # killed: the kernel's out-of-memory killer, most likely
            raise ParseError(
                "corrupt_file",
                f"“{self.name}” could not be read: reading it took too much memory.",
            )
        if status != 0:
            raise ChildFailed(f"the PDF reader exited with status {status}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except (OSError, ValueError):
                pass


def _child_main() -> None:
    """`python -m knowledge.parsing`: a range of a PDF's pages as JSON lines (`{"page",
    "text"}`) on standard output, or `{"error", "message"}` (a ParseError) last; the input
    is a JSON line (`{"name", "first", "end"}`, pages counted from 0), then the file."""
    stdin = sys.stdin.buffer
    job = json.loads(stdin.readline())
    data = stdin.read()
    name, out = job["name"], sys.stdout
    try:
        with _library_errors(name):
            reader = _open_pdf(name, data)
            for number in range(int(job["first"]), int(job["end"])):
                text = reader.pages[number].extract_text() or ""
                out.write(json.dumps({"page": number + 1, "text": text}) + "\n")
                out.flush()
    except ParseError as error:
        out.write(json.dumps({"error": error.code, "message": error.message}) + "\n")
        out.flush()


def _encrypted(name: str) -> ParseError:
    return ParseError(
        "encrypted_pdf",
        f"“{name}” is protected by a password; remove the protection and upload it again.",
    )


# DOCX --------------------------------------------------------------------------------------


def _check_zip(name: str, data: bytes) -> None:
    """Refuse an archive that would inflate beyond the limits, reading only its directory.

    The declared sizes are what bound the inflation: zipfile stops a member at its declared
    size (and fails its CRC check) however much more its compressed data would give."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise ParseError(
            "corrupt_file", f"“{name}” could not be read: the archive is damaged."
        ) from error
    bomb = ParseError(
        "zip_bomb",
        f"“{name}” expands to far more data than a document holds and was refused.",
    )
    if len(members) > MAX_ZIP_MEMBERS:
        raise bomb
    inflated = sum(member.file_size for member in members)
    packed = sum(member.compress_size for member in members)
    if inflated > MAX_ZIP_UNCOMPRESSED:
        raise bomb
    if inflated > _RATIO_CHECKED_ABOVE and inflated > MAX_ZIP_RATIO * max(packed, 1):
        raise bomb


_HEADING_STYLE = re.compile(r"^(heading\s*\d|title)$", re.IGNORECASE)


def _parse_docx(name: str, data: bytes, out: _Collector) -> None:
    _check_zip(name, data)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(io.BytesIO(data))
    heading: str | None = None
    lines: list[str] = []

    def flush() -> None:
        out.add("\n".join(lines), heading=heading)
        lines.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            style = block.style.name if block.style is not None else ""
            if text and _HEADING_STYLE.match(style or ""):
                flush()
                heading = text
            lines.append(text)
        elif isinstance(block, Table):
            for row in block.rows:
                cells = [cell.text.strip() for cell in row.cells]
                # Merged cells repeat their text once per grid column.
                unique = [c for i, c in enumerate(cells) if c and c not in cells[:i]]
                if unique:
                    lines.append(" | ".join(unique))
    flush()


# HTML --------------------------------------------------------------------------------------

_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_HTML_DROPPED = frozenset(
    {"script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object"}
)
_HTML_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl",
        "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "li",
        "main", "nav", "ol", "p", "pre", "section", "summary", "table", "td", "th", "tr",
        "ul", "caption", "body", "html",
    }
)  # fmt: skip


_BLOCK_END = object()  # marks where a block element's children end on the walk's stack


def _parse_html(text: str, out: _Collector) -> None:
    from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, Tag
    from bs4.element import CData, ProcessingInstruction

    soup = BeautifulSoup(text, "html.parser")
    skipped = (Comment, Declaration, Doctype, CData, ProcessingInstruction)
    heading: str | None = None
    parts: list[str] = []

    def flush() -> None:
        out.add("".join(parts), heading=heading)
        parts.clear()

    # An explicit stack, not recursion: a hostile page may nest thousands of elements deep.
    stack: list[object] = list(reversed(list(soup.children)))
    while stack:
        node = stack.pop()
        if node is _BLOCK_END:
            parts.append("\n")
        elif isinstance(node, NavigableString):
            if not isinstance(node, skipped):
                parts.append(str(node))
        elif isinstance(node, Tag):
            tag = node.name.lower()
            if tag in _HTML_DROPPED:
                continue
            if tag in _HTML_HEADINGS:
                flush()
                heading = node.get_text(" ", strip=True) or None
                parts.append((heading or "") + "\n")
                continue
            if tag in _HTML_BLOCKS:
                parts.append("\n")
                stack.append(_BLOCK_END)
            stack.extend(reversed(list(node.children)))
    flush()


# Markdown ----------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _parse_markdown(text: str, out: _Collector) -> None:
    heading: str | None = None
    lines: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        opened = _FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            lines.append(line)
            continue
        if opened:
            fence = opened.group(1)
            lines.append(line)
            continue
        match = _ATX.match(line)
        if match:
            out.add("\n".join(lines), heading=heading)
            lines = []
            heading = (match.group(2) or "").strip() or None
        lines.append(line)
    out.add("\n".join(lines), heading=heading)


# CSV ---------------------------------------------------------------------------------------


def _parse_csv(text: str, out: _Collector) -> None:
    sample = text[: 64 * 1024]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    header: list[str] | None = None
    lines: list[str] = []
    for row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            continue
        pairs = []
        for i, value in enumerate(row):
            value = value.strip()
            if not value:
                continue
            column = header[i] if i < len(header) and header[i] else f"column {i + 1}"
            pairs.append(f"{column}: {value}")
        if pairs:
            lines.append("; ".join(pairs))
    if not lines and header:
        lines.append("; ".join(cell for cell in header if cell))
    out.add("\n".join(lines))


if __name__ == "__main__":
    _child_main()
