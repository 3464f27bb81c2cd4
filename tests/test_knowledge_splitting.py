"""knowledge.splitting: chunks keep their section's page and heading, are indexed 0..n-1,
hashed, and cut Chinese text at its sentence punctuation."""

from __future__ import annotations

import hashlib

import pytest

from knowledge.parsing import Section
from knowledge.splitting import SEPARATORS, ChunkDraft, split_sections

FAQ = (
    "我想查询订单状态，请问在哪里可以看到？您可以在我的订单页面查看订单状态。"
    "退款一般需要三个工作日，请耐心等待！如需人工客服，请拨打热线。"
)


def test_chinese_without_spaces_is_cut_at_its_sentence_ends() -> None:
    chunks = split_sections([Section(FAQ)], chunk_size=30, chunk_overlap=0)
    assert [c.text for c in chunks] == [
        "我想查询订单状态，请问在哪里可以看到？",
        "您可以在我的订单页面查看订单状态。",
        "退款一般需要三个工作日，请耐心等待！",
        "如需人工客服，请拨打热线。",
    ]
    assert all(c.text[-1] in "。！？" for c in chunks)


def test_a_long_chinese_sentence_falls_back_to_commas_before_cutting_words() -> None:
    sentence = (
        "如果您在收到商品后发现质量问题，可以在七天内申请无理由退货，客服会在一个工作日内联系您。"
    )
    chunks = split_sections([Section(sentence)], chunk_size=20, chunk_overlap=0)
    assert [c.text for c in chunks] == [
        "如果您在收到商品后发现质量问题，",
        "可以在七天内申请无理由退货，",
        "客服会在一个工作日内联系您。",
    ]


def test_the_old_separators_would_cut_chinese_mid_word() -> None:
    """What the Chinese separators are for: LangChain's defaults cut by character count."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    plain = RecursiveCharacterTextSplitter(chunk_size=30, chunk_overlap=0)
    assert any(c[-1] not in "。！？，" for c in plain.split_text(FAQ))


def test_english_is_cut_at_sentence_ends_but_not_inside_numbers() -> None:
    text = (
        "Refunds take 3.14 days. Orders ship fast! Do you need help? Call us at example.com today."
    )
    chunks = split_sections([Section(text)], chunk_size=40, chunk_overlap=0)
    assert [c.text for c in chunks] == [
        "Refunds take 3.14 days.",
        "Orders ship fast!",
        "Do you need help?",
        "Call us at example.com today.",
    ]


def test_chunks_keep_page_and_heading_and_are_indexed_over_the_document() -> None:
    sections = [
        Section("First page text.\n\nMore on page one.", page=1),
        Section("   \n  "),
        Section("退款需要三个工作日。", page=2, heading="退款"),
    ]
    chunks = split_sections(sections, chunk_size=20, chunk_overlap=0)
    assert chunks == [
        ChunkDraft(0, "First page text.", 1, None, hashlib.sha256(b"First page text.").hexdigest()),
        ChunkDraft(
            1, "More on page one.", 1, None, hashlib.sha256(b"More on page one.").hexdigest()
        ),
        ChunkDraft(
            2,
            "退款需要三个工作日。",
            2,
            "退款",
            hashlib.sha256("退款需要三个工作日。".encode()).hexdigest(),
        ),
    ]


def test_overlap_repeats_the_end_of_the_previous_chunk() -> None:
    words = " ".join(f"w{i}" for i in range(40))
    chunks = split_sections([Section(words)], chunk_size=30, chunk_overlap=10)
    assert len(chunks) > 2
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.text.split()[0] in before.text.split()
        assert len(before.text) <= 30


def test_no_chunk_is_empty_or_padded() -> None:
    chunks = split_sections([Section("a\n\n\n\n   \n\nb")], chunk_size=1, chunk_overlap=0)
    assert [c.text for c in chunks] == ["a", "b"]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1), (10, 20)])
def test_nonsense_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        split_sections([Section("text")], chunk_size=size, chunk_overlap=overlap)


def test_separators_put_chinese_punctuation_before_ascii_and_end_with_characters() -> None:
    assert SEPARATORS[:2] == ["\n\n", "\n"]
    assert SEPARATORS.index("。") < SEPARATORS.index("，") < SEPARATORS.index(". ")
    for mark in "。！？；，、：．":
        assert mark in SEPARATORS
    assert SEPARATORS[-2:] == [" ", ""]
