"""knowledge.keyword: the tokenizer finds Chinese words inside clauses, the BM25 index ranks
a small Chinese FAQ right, and the cache builds an index once per key."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from rank_bm25 import BM25Okapi

from flows.components.retrieval import tokenize as old_tokenize
from knowledge.keyword import IndexCache, KeywordIndex, stem, tokenize

# A customer-service FAQ, one entry per chunk id.
FAQ: dict[int, str] = {
    1: "我想查询订单状态，请问在哪里可以看到？您可以在“我的订单”页面查看每个订单的物流和状态。",
    2: "如何申请退款？在订单详情页点击申请退款，审核通过后三个工作日内原路退回。",
    3: "怎么联系人工客服？拨打客服热线或在App内点击在线客服，工作时间为早九点到晚九点。",
    4: "可以开发票吗？下单时选择开具发票，电子发票会在收货后发送到您的邮箱。",
    5: "修改收货地址：订单发货前可以在订单详情里修改地址，发货后请联系快递公司。",
    6: "忘记密码怎么办？在登录页点击忘记密码，通过手机验证码重置登录密码。",
    7: "优惠券使用规则：每笔订单限用一张优惠券，优惠券不能兑换现金。",
    8: "会员积分如何获得？每消费一元获得一个积分，积分可在积分商城兑换礼品。",
    9: "支付方式有哪些？支持微信支付、支付宝和银行卡支付。",
    10: "商品质量问题怎么处理？收到商品七天内可申请售后换货或退货，运费由我们承担。",
}

# Query -> the entry that answers it. Short queries, the way people type into a search box.
QUERIES: dict[str, int] = {
    "订单": 1,
    "订单状态": 1,
    "退款": 2,
    "多久能退款": 2,
    "人工客服": 3,
    "发票": 4,
    "电子发票": 4,
    "改地址": 5,
    "忘记密码": 6,
    "优惠券": 7,
    "积分": 8,
    "怎么支付": 9,
}


def hits_at_1(search: Callable[[str], int | None]) -> int:
    return sum(1 for query, expected in QUERIES.items() if search(query) == expected)


@pytest.fixture(scope="module")
def faq_index() -> KeywordIndex:
    return KeywordIndex.build(FAQ.items())


# --- tokenizer --------------------------------------------------------------------------------


def test_cjk_runs_become_overlapping_bigrams() -> None:
    assert tokenize("我想查询订单状态") == ["我想", "想查", "查询", "询订", "订单", "单状", "状态"]
    assert tokenize("订单") == ["订单"]
    assert tokenize("单") == ["单"]


def test_latin_words_are_lowercased_stemmed_and_split_from_cjk() -> None:
    assert tokenize("Refunds for Order42，请问iPhone退款") == [
        "refund",
        "for",
        "order42",
        "请问",
        "iphone",
        "退款",
    ]
    assert stem("refunds") == "refund" and stem("class") == "class" and stem("bus") == "bus"


def test_full_width_forms_are_normalised() -> None:
    assert tokenize("ＡＢＣ　１２３") == ["abc", "123"]


def test_kana_and_hangul_are_cjk_runs() -> None:
    assert tokenize("カタカナ 한국어") == ["カタ", "タカ", "カナ", "한국", "국어"]


def test_the_old_tokenizer_cannot_find_a_chinese_word_inside_a_clause() -> None:
    """Why the tokenizer changed: `\\w+` keeps a whole clause as one token."""
    assert old_tokenize("我想查询订单状态，请问...") == ["我想查询订单状态", "请问"]
    assert "订单" not in old_tokenize(FAQ[1])
    assert "订单" in tokenize(FAQ[1])


# --- the Chinese FAQ --------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), QUERIES.items())
def test_each_faq_query_ranks_its_entry_first(
    faq_index: KeywordIndex, query: str, expected: int
) -> None:
    results = faq_index.search(query, 3)
    assert results[0][0] == expected, results


def test_bigrams_beat_the_old_tokenizer_on_the_faq() -> None:
    """The measurement quoted in knowledge.keyword's docstring."""
    index = KeywordIndex.build(FAQ.items())
    ids = list(FAQ)
    old = BM25Okapi([old_tokenize(text) for text in FAQ.values()])

    def old_top(query: str) -> int | None:
        scores = old.get_scores(old_tokenize(query))
        best = max(range(len(ids)), key=lambda i: scores[i])
        return ids[best] if scores[best] > 0 else None

    def new_top(query: str) -> int | None:
        results = index.search(query, 1)
        return results[0][0] if results else None

    assert hits_at_1(new_top) == len(QUERIES) == 12
    assert hits_at_1(old_top) == 0
    assert old_top("订单") is None  # the query the issue reports


# --- the index --------------------------------------------------------------------------------


def test_only_chunks_sharing_a_term_are_returned(faq_index: KeywordIndex) -> None:
    assert faq_index.search("发票", 10) == [(4, pytest.approx(faq_index.search("发票", 1)[0][1]))]
    assert faq_index.search("天气预报", 10) == []
    assert faq_index.search("", 10) == []
    assert faq_index.search("订单", 0) == []


def test_scores_are_bm25_with_rarer_terms_weighing_more() -> None:
    index = KeywordIndex.build(
        [(1, "apple banana"), (2, "apple cherry"), (3, "apple"), (4, "apple apple")]
    )
    ranked = index.search("apple cherry", 4)
    assert ranked[0][0] == 2  # the only one with the rare term
    assert [cid for cid, _ in ranked[1:]] == [4, 3, 1]  # more apples, then shorter
    assert all(score > 0 for _, score in ranked)


def test_ties_are_broken_by_chunk_id_also_at_the_cut() -> None:
    index = KeywordIndex.build([(cid, "same text") for cid in (9, 3, 7, 1, 5)])
    assert [cid for cid, _ in index.search("text", 3)] == [1, 3, 5]
    assert [cid for cid, _ in index.search("text", 10)] == [1, 3, 5, 7, 9]


def test_length_and_an_empty_index() -> None:
    assert len(KeywordIndex.build(FAQ.items())) == 10
    empty = KeywordIndex.build([])
    assert len(empty) == 0 and empty.search("订单", 5) == []
    blank = KeywordIndex.build([(1, ""), (2, "...")])
    assert len(blank) == 2 and blank.search("订单", 5) == []


def test_a_large_index_returns_the_one_matching_chunk() -> None:
    items = [(i, f"订单 编号 number{i} 状态正常") for i in range(20_000)]
    index = KeywordIndex.build(items)
    assert index.search("number12345", 5)[0][0] == 12345
    assert len(index.search("订单状态", 50)) == 50


# --- the cache --------------------------------------------------------------------------------


def test_cache_builds_once_per_key_and_evicts_the_least_recently_used() -> None:
    cache = IndexCache(maxsize=2)
    loads: list[str] = []

    def loader(name: str) -> Callable[[], list[tuple[int, str]]]:
        def load() -> list[tuple[int, str]]:
            loads.append(name)
            return [(1, f"{name} text")]

        return load

    a = cache.get_or_build(("kb", 1), loader("a"))
    assert cache.get_or_build(("kb", 1), loader("a")) is a
    cache.get_or_build(("kb", 2), loader("b"))
    cache.get_or_build(("kb", 1), loader("a"))  # a is now the newest
    cache.get_or_build(("kb", 3), loader("c"))  # evicts b
    assert loads == ["a", "b", "c"]
    assert ("kb", 1) in cache and ("kb", 2) not in cache and len(cache) == 2
    cache.discard(("kb", 1))
    assert ("kb", 1) not in cache


def test_concurrent_callers_share_one_build() -> None:
    cache = IndexCache()
    started = threading.Event()
    release = threading.Event()
    calls = 0

    def slow_loader() -> list[tuple[int, str]]:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(10)
        return [(1, "订单状态")]

    results: list[KeywordIndex] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_build("k", slow_loader)))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    started.wait(10)
    time.sleep(0.05)  # let the other four reach the wait (the order, not a time bound)
    release.set()
    for thread in threads:
        thread.join(10)
    assert calls == 1 and cache.builds == 1
    assert len(results) == 5 and all(r is results[0] for r in results)


def test_a_failing_loader_caches_nothing_and_the_next_call_retries() -> None:
    cache = IndexCache()

    def broken() -> list[tuple[int, str]]:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        cache.get_or_build("k", broken)
    assert "k" not in cache
    index = cache.get_or_build("k", lambda: [(1, "发票")])
    assert index.search("发票", 1)[0][0] == 1
