"""The fake server's embeddings endpoints, spoken to by the real LangChain clients: vectors
are deterministic, unit length, close for texts that share words (Chinese included), and
the server can fail halfway and count what it embedded."""

from __future__ import annotations

import math

import httpx
import pytest
from langchain_ollama import OllamaEmbeddings
from langchain_openai import OpenAIEmbeddings

from tests.fakes.fake_openai import DEFAULT_EMBEDDING_DIMENSIONS, FakeOpenAIServer, fake_embedding


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def openai_client(server: FakeOpenAIServer, **kwargs: object) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        base_url=server.base_url,
        api_key="x",  # type: ignore[arg-type]
        model="fake-embed",
        check_embedding_ctx_length=False,
        **kwargs,  # type: ignore[arg-type]
    )


def test_vectors_are_deterministic_unit_length_and_meaningful() -> None:
    order = fake_embedding("订单")
    assert len(order) == DEFAULT_EMBEDDING_DIMENSIONS
    assert order == fake_embedding("订单")
    assert math.isclose(math.sqrt(sum(x * x for x in order)), 1.0)
    about_orders = fake_embedding("我想查询订单状态")
    about_invoices = fake_embedding("电子发票会发送到您的邮箱")
    assert cosine(order, about_orders) > cosine(order, about_invoices)
    assert cosine(fake_embedding("refund policy"), fake_embedding("Refunds")) > 0.5
    assert math.isclose(math.sqrt(sum(x * x for x in fake_embedding(""))), 1.0)


def test_openai_embeddings_client_round_trip() -> None:
    with FakeOpenAIServer() as server:
        client = openai_client(server)
        documents = client.embed_documents(["我想查询订单状态", "电子发票", "refund policy"])
        query = client.embed_query("订单")
        assert len(documents) == 3 and all(len(v) == 64 for v in documents)
        for text, vector in zip(["我想查询订单状态", "电子发票", "refund policy"], documents):
            assert vector == pytest.approx(fake_embedding(text), abs=1e-6)
        assert max(range(3), key=lambda i: cosine(query, documents[i])) == 0
        assert server.paths[-1] == "/v1/embeddings"
        assert server.embedding_requests == 2 and server.embedded_inputs == 4


def test_openai_client_dimensions_are_honoured() -> None:
    with FakeOpenAIServer() as server:
        vector = openai_client(server, dimensions=256).embed_query("订单状态")
        assert len(vector) == 256
        assert server.requests[-1]["dimensions"] == 256
        assert vector == pytest.approx(fake_embedding("订单状态", 256), abs=1e-6)


def test_openai_wire_shapes_float_and_token_arrays() -> None:
    with FakeOpenAIServer(embedding_dimensions=8) as server:
        reply = httpx.post(
            server.base_url + "/embeddings",
            json={"model": "m", "input": ["a b", [1, 2, 3]], "encoding_format": "float"},
        ).json()
        assert reply["object"] == "list" and reply["model"] == "m"
        assert [d["index"] for d in reply["data"]] == [0, 1]
        assert all(d["object"] == "embedding" and len(d["embedding"]) == 8 for d in reply["data"])
        assert reply["usage"]["prompt_tokens"] == reply["usage"]["total_tokens"] > 0
        single = httpx.post(server.base_url + "/embeddings", json={"input": [5, 6]}).json()
        assert len(single["data"]) == 1
        bad = httpx.post(server.base_url + "/embeddings", json={"input": {"no": 1}})
        assert bad.status_code == 400 and "input" in bad.json()["error"]["message"]
        assert server.embedding_requests == 2  # the refused request embedded nothing


def test_ollama_embeddings_client_round_trip() -> None:
    with FakeOpenAIServer() as server:
        client = OllamaEmbeddings(base_url=server.root_url, model="fake-embed")
        documents = client.embed_documents(["我想查询订单状态", "电子发票"])
        query = client.embed_query("发票")
        assert [len(v) for v in documents] == [64, 64]
        assert documents[1] == pytest.approx(fake_embedding("电子发票"), abs=1e-9)
        assert cosine(query, documents[1]) > cosine(query, documents[0])
        assert server.paths[-1] == "/api/embed"
        assert server.embedded_inputs == 3


def test_ollama_wire_shape() -> None:
    with FakeOpenAIServer() as server:
        reply = httpx.post(
            server.root_url + "/api/embed", json={"model": "nomic", "input": "订单"}
        ).json()
        assert reply["model"] == "nomic" and len(reply["embeddings"]) == 1
        legacy = httpx.post(
            server.root_url + "/api/embeddings", json={"model": "nomic", "prompt": "订单"}
        ).json()
        assert legacy["embedding"] == reply["embeddings"][0]


def test_fails_after_n_embedding_requests_and_counts_only_the_answered_ones() -> None:
    with FakeOpenAIServer(embed_fail_after=2) as server:
        client = openai_client(server, chunk_size=2, max_retries=0)
        assert len(client.embed_documents(["a", "b", "c", "d"])) == 4  # two requests of two
        with pytest.raises(Exception) as caught:
            client.embed_documents(["e"])
        assert "500" in str(caught.value) or "fake embedding failure" in str(caught.value)
        assert server.embedding_requests == 2 and server.embedded_inputs == 4
        server.embed_fail_after = None  # the endpoint recovers: a retry goes through
        assert len(client.embed_documents(["e"])) == 1
        assert server.embedding_requests == 3 and server.embedded_inputs == 5


def test_fails_halfway_through_one_document() -> None:
    """What ingestion sees when the endpoint fails mid-document: some batches answered."""
    with FakeOpenAIServer(embed_fail_after=1) as server:
        client = openai_client(server, chunk_size=2, max_retries=0)
        with pytest.raises(Exception):  # noqa: B017 - the client's own error type
            client.embed_documents(["a", "b", "c", "d"])
        assert server.embedding_requests == 1 and server.embedded_inputs == 2
