"""Files for the knowledge-base tests, made on the spot: PDFs (plain, without text,
encrypted, damaged), DOCX (with headings and a table, a zip bomb), HTML, Markdown, CSV and
files whose extension lies.

The PDFs are written by hand (one Helvetica text line per line of a page, ASCII only: the
standard fonts carry no Chinese glyphs) so the tests need no PDF-writing library; pypdf
only encrypts them.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence

__all__ = [
    "PNG_BYTES",
    "make_csv",
    "make_damaged_pdf",
    "make_docx",
    "make_encrypted_pdf",
    "make_html",
    "make_markdown",
    "make_pdf",
    "make_zip_bomb_docx",
    "make_zip_many_members_docx",
]

# The first bytes of a real PNG image (signature + IHDR of a 1x1 image).
PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _pdf_string(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1", "replace") + b")"


def make_pdf(pages: Sequence[str]) -> bytes:
    """A PDF with one page per item of `pages`; each line of an item is a text line on its
    page (an empty item is a page without text)."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page tree's number is known
    tree = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for text in pages:
        ops = [b"BT", b"/F1 12 Tf", b"14 TL", b"72 720 Td"]
        for line in text.splitlines():
            ops.append(_pdf_string(line) + b" Tj T*")
        ops.append(b"ET")
        stream = b"\n".join(ops) if text else b""
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
                b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                % (tree, font, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % tree
    refs = b" ".join(b"%d 0 R" % kid for kid in kids)
    objects[tree - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids))

    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objects) + 1, catalog, xref)
    )
    return out.getvalue()


def make_encrypted_pdf(
    pages: Sequence[str] = ("A secret page.",), *, user_password: str = "secret"
) -> bytes:
    """`make_pdf(pages)` encrypted (AES-128); with `user_password=""` it opens without one
    (only editing is protected)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(pages))))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_damaged_pdf() -> bytes:
    """Starts like a PDF, then is garbage: no objects, no cross-reference table."""
    return b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def make_docx(
    paragraphs: Sequence[str],
    headings: Mapping[int, str] | None = None,
    *,
    table: Sequence[Sequence[str]] | None = None,
) -> bytes:
    """A .docx with `paragraphs` in order; `headings[i]` (a "Heading 1") goes before
    paragraph i; `table` rows are appended as a table at the end."""
    import docx

    document = docx.Document()
    for i, text in enumerate(paragraphs):
        if headings and i in headings:
            document.add_heading(headings[i], level=1)
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=max(len(row) for row in table))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_zip_bomb_docx(inflated_bytes: int = 64 * 1024 * 1024) -> bytes:
    """A real .docx plus one member of `inflated_bytes` zeros: it deflates about 1000:1."""
    base = make_docx(["An innocent looking document."])
    out = io.BytesIO(base)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        chunk = bytes(1024 * 1024)
        with archive.open("word/media/image1.bin", "w", force_zip64=True) as member:
            left = inflated_bytes
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
    return out.getvalue()


def make_zip_many_members_docx(members: int = 6_000) -> bytes:
    """A real .docx padded with `members` tiny members (a bomb by member count)."""
    out = io.BytesIO(make_docx(["Many parts."]))
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for i in range(members):
            archive.writestr(f"customXml/padding{i}.xml", b"<a/>")
    return out.getvalue()


def make_html(body: str, *, title: str = "A page") -> bytes:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
        + title
        + "</title><style>body { color: red }</style></head><body>"
        + body
        + "<script>var secret = 'not text';</script></body></html>"
    ).encode()


def make_markdown(text: str) -> bytes:
    return text.encode()


def make_csv(rows: Sequence[Sequence[str]], *, delimiter: str = ",") -> bytes:
    import csv

    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue().encode()
