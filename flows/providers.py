"""Model providers as the settings page knows them: their names, default endpoints, and a
"test connection" that makes one cheap request (list the models) with a credential.

The request goes where a run's model would go, so it is held to the same endpoint rules
(flows.endpoints: no metadata or link-local addresses, no platform services, private
networks only where the platform admin allows them), follows no redirects, and never
echoes the key back: a provider's error text is shown with the key cut out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from flows.components.base import DecryptedCredential
from flows.endpoints import EndpointRefused, check_model_endpoint

TEST_TIMEOUT_SECONDS = 10.0
SHOWN_MODELS = 8
MESSAGE_CHARS = 300


@dataclass(frozen=True)
class ProviderInfo:
    key: str
    label: str
    default_base_url: str  # used when a credential leaves its base URL empty
    base_url_hint: str


PROVIDERS: dict[str, ProviderInfo] = {
    info.key: info
    for info in (
        ProviderInfo(
            "openai",
            "OpenAI-compatible",
            "https://api.openai.com/v1",
            "Empty for OpenAI; e.g. https://api.deepseek.com/v1 or http://10.0.0.5:8000/v1 "
            "for another OpenAI-compatible server.",
        ),
        ProviderInfo(
            "anthropic",
            "Anthropic",
            "https://api.anthropic.com",
            "Empty for Anthropic's own API.",
        ),
        ProviderInfo(
            "ollama",
            "Ollama",
            "http://localhost:11434",
            "Where Ollama listens, e.g. http://10.0.0.7:11434.",
        ),
    )
}


@dataclass(frozen=True)
class ConnectionCheck:
    """What "test connection" found: `message` is for the user, `models` what it listed."""

    ok: bool
    message: str
    models: list[str] = field(default_factory=list)


def _request(credential: DecryptedCredential) -> tuple[str, dict[str, str]]:
    """The model-list URL and headers of this provider."""
    base = (credential.base_url or PROVIDERS[credential.provider].default_base_url).rstrip("/")
    key = credential.api_key
    if credential.provider == "anthropic":
        url = f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"
        headers = {"anthropic-version": "2023-06-01"}
        if key:
            headers["x-api-key"] = key
        return url, headers
    if credential.provider == "ollama":
        return f"{base}/api/tags", ({"Authorization": f"Bearer {key}"} if key else {})
    return f"{base}/models", ({"Authorization": f"Bearer {key}"} if key else {})


def _model_names(provider: str, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    rows = body.get("models") if provider == "ollama" else body.get("data")
    names = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict):
            name = row.get("name") or row.get("model") or row.get("id")
            if isinstance(name, str):
                names.append(name[:200])
    return names


def _provider_error(response: httpx.Response) -> str:
    """The provider's own error text (OpenAI, Anthropic and Ollama shapes), else the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)
    if isinstance(error, str):
        return error
    return str(body)


def _without_secret(text: str, secret: str) -> str:
    """`text` cut to size with the key (and any long part of it) removed."""
    if secret:
        text = text.replace(secret, "[key]")
        for size in (24, 16):  # a provider may quote part of the key
            for start in range(0, max(0, len(secret) - size + 1), 4):
                text = text.replace(secret[start : start + size], "[key]")
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "…"


def check_connection(credential: DecryptedCredential) -> ConnectionCheck:
    """List the provider's models with this credential: the cheapest request that proves the
    endpoint answers and accepts the key."""
    url, headers = _request(credential)
    try:
        check_model_endpoint(url)
    except EndpointRefused as exc:
        return ConnectionCheck(False, f"This endpoint is not allowed: {exc}")
    try:
        with httpx.Client(timeout=TEST_TIMEOUT_SECONDS, follow_redirects=False) as client:
            response = client.get(url, headers=headers)
    except httpx.TimeoutException:
        return ConnectionCheck(False, f"No answer from {url} within {TEST_TIMEOUT_SECONDS:.0f} s.")
    except httpx.HTTPError as exc:
        return ConnectionCheck(False, f"Could not reach {url} ({type(exc).__name__}).")
    if response.is_redirect:
        return ConnectionCheck(False, f"{url} answered with a redirect; use the final address.")
    if response.status_code != 200:
        said = _without_secret(_provider_error(response), credential.api_key)
        return ConnectionCheck(False, f"The provider answered HTTP {response.status_code}: {said}")
    try:
        names = _model_names(credential.provider, response.json())
    except ValueError:
        return ConnectionCheck(False, f"{url} did not answer with JSON; is this the API address?")
    shown = ", ".join(names[:SHOWN_MODELS]) + (" …" if len(names) > SHOWN_MODELS else "")
    listed = f"{len(names)} model{'s' if len(names) != 1 else ''}"
    return ConnectionCheck(True, f"Connected: {listed}" + (f" ({shown})." if names else "."), names)
