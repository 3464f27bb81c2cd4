"""knowledge.parsing: each format's text with its pages and headings; each bad file ends in
a ParseError with its code, and no library exception escapes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from knowledge.parsing import (
    FORMATS,
    Parsed,
    ParseError,
    Section,
    parse_file,
    parse_stream,
    sniff,
)
from tests.knowledge_files import (
    PNG_BYTES,
    make_csv,
    make_damaged_pdf,
    make_docx,
    make_encrypted_pdf,
    make_html,
    make_markdown,
    make_pdf,
    make_zip_bomb_docx,
    make_zip_many_members_docx,
)


def error_code(name: str, data: bytes, **kwargs: int) -> str:
    with pytest.raises(ParseError) as caught:
        parse_file(name, data, **kwargs)
    assert str(caught.value).endswith(".")  # a sentence, not a library's repr
    assert name in str(caught.value) or caught.value.code == "too_large"
    return caught.value.code


# --- formats ----------------------------------------------------------------------------------


def test_pdf_keeps_each_pages_number_and_skips_pages_without_text() -> None:
    parsed = parse_file(
        "guide.pdf", make_pdf(["Orders ship in two days.", "", "Refunds take a week."])
    )
    assert parsed == Parsed(
        format="pdf",
        sections=[
            Section(text="Orders ship in two days.", page=1),
            Section(text="Refunds take a week.", page=3),
        ],
        pages=3,
    )


def test_pdf_encrypted_only_against_editing_opens_with_the_empty_password() -> None:
    parsed = parse_file("open.pdf", make_encrypted_pdf(["Readable."], user_password=""))
    assert [s.text for s in parsed.sections] == ["Readable."]


def test_docx_headings_become_section_headings_and_tables_are_read() -> None:
    data = make_docx(
        ["Welcome.", "Refunds take a week.", "Ask for an invoice by mail."],
        {1: "Refunds", 2: "Invoices"},
        table=[["Plan", "Price"], ["Pro", "10"]],
    )
    parsed = parse_file("faq.docx", data)
    assert parsed.format == "docx" and parsed.pages is None
    assert parsed.sections == [
        Section(text="Welcome."),
        Section(text="Refunds\nRefunds take a week.", heading="Refunds"),
        Section(
            text="Invoices\nAsk for an invoice by mail.\nPlan | Price\nPro | 10",
            heading="Invoices",
        ),
    ]


def test_html_drops_scripts_and_styles_and_splits_at_headings() -> None:
    body = (
        "<p>Intro <b>bold</b> text</p><!-- a comment -->"
        "<h1>Refunds</h1><p>Refunds take a week.</p>"
        "<div><h2>Invoices</h2><ul><li>By mail</li><li>By post</li></ul></div>"
    )
    parsed = parse_file("faq.html", make_html(body))
    assert parsed.format == "html"
    assert [(s.heading, s.text) for s in parsed.sections] == [
        (None, "Intro bold text"),
        ("Refunds", "Refunds\n\nRefunds take a week."),
        ("Invoices", "Invoices\n\nBy mail\n\nBy post"),
    ]
    assert not any("secret" in s.text or "color" in s.text for s in parsed.sections)


def test_html_nested_thousands_deep_is_read_without_recursion() -> None:
    html = ("<div>" * 5000 + "deep text" + "</div>" * 5000).encode()
    assert [s.text for s in parse_file("deep.htm", html).sections] == ["deep text"]


def test_markdown_splits_on_atx_headings_but_not_inside_code_fences() -> None:
    text = (
        "Intro line.\n# 订单状态\n在“我的订单”中查询。\n```\n# a comment in code\n```\n"
        "## Invoices ##\nAsk us.\n"
    )
    parsed = parse_file("faq.md", make_markdown(text))
    assert [(s.heading, s.text) for s in parsed.sections] == [
        (None, "Intro line."),
        ("订单状态", "# 订单状态\n在“我的订单”中查询。\n```\n# a comment in code\n```"),
        ("Invoices", "## Invoices ##\nAsk us."),
    ]


def test_csv_rows_become_column_value_lines_with_the_sniffed_delimiter() -> None:
    rows = [["问题", "答案"], ["订单状态", "在我的订单页查看"], ["退款", "三个工作日"]]
    for delimiter in (",", ";", "\t"):
        parsed = parse_file("faq.csv", make_csv(rows, delimiter=delimiter))
        assert parsed.sections == [
            Section(text="问题: 订单状态; 答案: 在我的订单页查看\n问题: 退款; 答案: 三个工作日")
        ]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "utf-16"])
def test_chinese_text_files_decode_in_the_common_encodings(encoding: str) -> None:
    text = "我想查询订单状态，请问在哪里看？"
    parsed = parse_file("note.txt", text.encode(encoding))
    assert parsed == Parsed(format="text", sections=[Section(text=text)], pages=None)


def test_text_that_mentions_magic_numbers_is_still_text() -> None:
    text = b"MZ and %PDF- are how programs and PDFs start.\n\n# Notes\nRar! GIF is fine."
    assert sniff("notes.md", text) == "markdown"
    assert sniff("notes.txt", b"\n" * 10 + b"%PDF-1.7 is a header") == "text"
    assert sniff("odd.pdf", b"junk before the header\n" + make_pdf(["x"])) == "pdf"


def test_formats_cover_the_supported_extensions() -> None:
    assert set(FORMATS) == {"pdf", "docx", "html", "htm", "md", "markdown", "txt", "csv"}
    assert sniff("A.PDF", make_pdf(["x"])) == "pdf"
    assert sniff("x.docx", make_docx(["x"])) == "docx"
    assert sniff("x.markdown", b"# hi") == "markdown"


# --- bad files --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.pdf", "empty.docx", "empty.txt", "empty.csv"])
def test_empty_file(name: str) -> None:
    assert error_code(name, b"") == "empty_file"


@pytest.mark.parametrize("name", ["photo.png", "archive.zip", "old.doc", "noextension"])
def test_unsupported_type(name: str) -> None:
    assert error_code(name, PNG_BYTES) == "unsupported_type"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("report.pdf", PNG_BYTES),
        ("report.pdf", b"just some text, not a PDF"),
        ("report.pdf", make_docx(["x"])),
        ("letter.docx", b"plain text pretending to be Word"),
        ("letter.docx", make_pdf(["x"])),
        ("letter.docx", b"PK\x05\x06" + bytes(18)),  # an empty zip: no word/document.xml
        ("notes.txt", PNG_BYTES),
        ("notes.txt", make_pdf(["x"])),
        ("page.html", make_docx(["x"])),
        ("table.csv", bytes(range(256)) * 4),
        ("notes.md", "é café".encode("latin-1")),  # neither UTF-8 nor GB18030
    ],
)
def test_extension_that_lies_about_the_content(name: str, data: bytes) -> None:
    assert error_code(name, data) == "type_mismatch"


def test_zip_without_a_document_is_not_a_docx() -> None:
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert error_code("letter.docx", out.getvalue()) == "type_mismatch"


def test_encrypted_pdf() -> None:
    assert error_code("secret.pdf", make_encrypted_pdf()) == "encrypted_pdf"


@pytest.mark.parametrize(
    "data",
    [make_damaged_pdf(), make_pdf(["Cut short"])[:150]],
    ids=["garbage", "truncated"],
)
def test_corrupt_pdf(data: bytes) -> None:
    assert error_code("broken.pdf", data) == "corrupt_file"


def test_corrupt_docx() -> None:
    data = make_docx(["x"])
    assert error_code("broken.docx", data[: len(data) // 2]) == "corrupt_file"
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<not-closed")
        archive.writestr("[Content_Types].xml", "nonsense")
    assert error_code("broken.docx", out.getvalue()) == "corrupt_file"


def test_zip_bomb_by_ratio_is_refused_before_inflating() -> None:
    assert error_code("bomb.docx", make_zip_bomb_docx()) == "zip_bomb"


def test_zip_bomb_by_member_count() -> None:
    assert error_code("bomb.docx", make_zip_many_members_docx()) == "zip_bomb"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("blank.pdf", make_pdf(["", ""])),
        ("blank.txt", b"   \n\t\n"),
        ("blank.html", make_html("<p>  </p>")),
        ("blank.docx", make_docx(["", " "])),
    ],
)
def test_no_extractable_text(name: str, data: bytes) -> None:
    assert error_code(name, data) == "no_text"


def test_too_much_text() -> None:
    assert error_code("big.txt", b"word " * 100, max_chars=50) == "too_large"
    assert error_code("big.pdf", make_pdf(["x" * 40, "y" * 40]), max_chars=50) == "too_large"


def test_parse_error_codes_are_checked_and_errors_survive_pickling() -> None:
    with pytest.raises(ValueError):
        ParseError("whatever", "A message.")
    copy = pickle.loads(pickle.dumps(ParseError("no_text", "Nothing to read.")))
    assert (copy.code, str(copy)) == ("no_text", "Nothing to read.")


# --- a long PDF read by a child process ----------------------------------------------------


def our_pdf_children() -> list[int]:
    """Ids of this process's children that are reading a PDF (`python -m knowledge.parsing`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = next(line for line in status.splitlines() if line.startswith("PPid:"))
        if int(parent.split()[1]) == os.getpid() and b"knowledge.parsing" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_pdf_read_by_a_child_process_gives_the_same_sections_page_by_page() -> None:
    pages = [f"Page {p}: 订单状态 and the refund rule.\nSecond line {p}." for p in range(1, 9)]
    pages[3] = ""  # a page without text
    for data in (make_pdf(pages), make_encrypted_pdf(pages, user_password="")):
        expected = parse_file("manual.pdf", data).sections
        stream = parse_stream("manual.pdf", data, child_from_pages=5)
        assert (stream.format, stream.pages) == ("pdf", 8)  # known before any page is read
        assert list(stream.sections) == expected
        # Three children, pages 1-2, 3-5 and 6-8: the same sections, in order.
        stream = parse_stream("manual.pdf", data, child_from_pages=2, children=3)
        assert list(stream.sections) == expected
    # Below the threshold the pages are read here, with the same result.
    short = make_pdf(pages[:4])
    stream = parse_stream("short.pdf", short, child_from_pages=5)
    assert list(stream.sections) == parse_file("short.pdf", short).sections
    assert our_pdf_children() == []


def test_a_child_reading_a_pdf_is_stopped_when_its_pages_are_no_longer_wanted() -> None:
    data = make_pdf([f"Page {p}: " + "words " * 40 for p in range(1, 200)])
    stream = parse_stream("long.pdf", data, child_from_pages=1, children=2)
    first = next(stream.sections)
    assert first.page == 1
    stream.sections.close()  # the ingestion failed, lost its lease, ...
    assert our_pdf_children() == []
    with pytest.raises(ParseError) as caught:
        list(
            parse_stream("long.pdf", data, max_chars=1000, child_from_pages=1, children=2).sections
        )
    assert caught.value.code == "too_large"
    assert our_pdf_children() == []


def test_the_child_reports_a_bad_pdf_as_a_parse_error() -> None:
    job = json.dumps({"name": "broken.pdf", "first": 0, "end": 1}).encode()
    done = subprocess.run(  # noqa: S603 (this interpreter, a fixed module)
        [sys.executable, "-m", "knowledge.parsing"],
        input=job + b"\n" + make_damaged_pdf(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    (line,) = done.stdout.splitlines()
    assert json.loads(line) == {
        "error": "corrupt_file",
        "message": "“broken.pdf” could not be read: the file is damaged or malformed.",
    }
