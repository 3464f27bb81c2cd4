"""Embeddings through a workspace's existing credentials (flows.Credential).

OpenAI-compatible endpoints (OpenAI and the many providers that speak its API) through
`langchain_openai.OpenAIEmbeddings`, Ollama through `langchain_ollama.OllamaEmbeddings`.
The endpoint is held to the same rules as a chat model's (flows.endpoints), and a
provider's error never reaches the user verbatim (it can quote the key): it is mapped to a
sentence here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_ollama import OllamaEmbeddings
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from flows.components.base import DecryptedCredential
from flows.endpoints import EndpointRefused, check_model_endpoint
from flows.selectors import credential_row, decrypted
from knowledge.models import KnowledgeBase

EMBEDDING_PROVIDERS = ("openai", "ollama")
MAX_DIMENSIONS = 2000  # pgvector's HNSW limit for `vector`
BATCH_SIZE = 64


class EmbeddingError(Exception):
    """The embeddings endpoint could not give vectors: `code` and a sentence for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def embeddings_for(credential: DecryptedCredential, model: str) -> Any:
    """The LangChain embeddings client for a credential's provider."""
    try:
        check_model_endpoint(credential.base_url)
    except EndpointRefused as exc:
        raise EmbeddingError(
            "endpoint_refused", f"The credential's endpoint is not allowed: {exc}"
        ) from exc
    if credential.provider == "openai":
        return OpenAIEmbeddings(
            model=model,
            openai_api_base=credential.base_url or None,
            openai_api_key=SecretStr(credential.api_key or "not-needed"),
            # Other OpenAI-compatible servers take text, not tiktoken's token ids.
            check_embedding_ctx_length=False,
            max_retries=1,
            request_timeout=60,
            chunk_size=BATCH_SIZE,
        )
    if credential.provider == "ollama":
        headers = {"Authorization": f"Bearer {credential.api_key}"} if credential.api_key else {}
        return OllamaEmbeddings(
            model=model,
            base_url=credential.base_url or None,
            client_kwargs={"headers": headers, "timeout": 60},
        )
    raise EmbeddingError(
        "provider_unsupported", "This credential's provider does not offer embeddings here."
    )


def embeddings_for_kb(kb: KnowledgeBase) -> Any | None:
    """`kb`'s embeddings client, or None when it has no embeddings credential (keyword
    only). The credential is looked up in the knowledge base's own workspace."""
    if not kb.has_embeddings:
        return None
    row = credential_row(kb.workspace, kb.embedding_credential_id)
    if row is None:
        raise EmbeddingError("credential_missing", "The embeddings credential no longer exists.")
    return embeddings_for(decrypted(row), kb.embedding_model)


def _failure(exc: Exception) -> EmbeddingError:
    """A provider failure as a sentence (never the provider's own text, which may quote
    the key)."""
    if isinstance(exc, EmbeddingError):
        return exc
    status = getattr(exc, "status_code", None) or getattr(
        getattr(exc, "response", None), "status_code", None
    )
    name = type(exc).__name__
    if status in (401, 403) or "Authentication" in name or "PermissionDenied" in name:
        return EmbeddingError(
            "embedding_auth", "The embeddings endpoint refused the credential's key."
        )
    if status == 404 or "NotFound" in name:
        return EmbeddingError(
            "embedding_model", "The embeddings endpoint does not know this model."
        )
    if status == 429 or "RateLimit" in name:
        return EmbeddingError(
            "embedding_rate_limited", "The embeddings endpoint is rate limiting; retry later."
        )
    if "Timeout" in name:
        return EmbeddingError(
            "embedding_timeout", "The embeddings endpoint did not answer in time."
        )
    if "Connect" in name or "Connection" in name:
        return EmbeddingError(
            "embedding_unreachable", "The embeddings endpoint could not be reached."
        )
    if isinstance(status, int):
        return EmbeddingError(
            "embedding_failed", f"The embeddings endpoint failed (HTTP {status})."
        )
    return EmbeddingError("embedding_failed", "The embeddings endpoint failed.")


def embed_documents(client: Any, texts: Sequence[str]) -> list[list[float]]:
    """Vectors for `texts` (one request per batch, as the client splits them)."""
    try:
        vectors = client.embed_documents(list(texts))
    except Exception as exc:
        raise _failure(exc) from exc
    return _checked(vectors, len(texts))


def embed_query(client: Any, text: str) -> list[float]:
    try:
        vector = client.embed_query(text)
    except Exception as exc:
        raise _failure(exc) from exc
    return _checked([vector], 1)[0]


def _checked(vectors: Any, count: int) -> list[list[float]]:
    if not isinstance(vectors, list) or len(vectors) != count:
        raise EmbeddingError(
            "embedding_invalid",
            "The embeddings endpoint answered with the wrong number of vectors.",
        )
    out = []
    for vector in vectors:
        if not vector or len(vector) > MAX_DIMENSIONS:
            raise EmbeddingError(
                "embedding_invalid",
                f"The embeddings endpoint answered with vectors of {len(vector or [])} "
                f"dimensions (1 to {MAX_DIMENSIONS} are supported).",
            )
        out.append([float(x) for x in vector])
    if len({len(v) for v in out}) > 1:
        raise EmbeddingError(
            "embedding_invalid", "The embeddings endpoint answered with vectors of mixed sizes."
        )
    return out
