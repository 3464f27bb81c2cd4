"""Which model endpoints a credential's `base_url` may point at.

A credential's base URL is typed by a workspace admin, and the worker then makes requests
to it, with the provider key, from inside the deployment. So:

- link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254,
  100.100.100.200), multicast, reserved and unspecified addresses are refused always;
- the platform's own services (its database, Redis, broker and web port) are refused always;
- loopback and private addresses (127/8, 10/8, 172.16/12, 192.168/16, CGN, fc00::/7, ...)
  only inside the networks the platform admin lists in FLOWDECK_MODEL_PRIVATE_NETWORKS
  (a self-hosted vLLM or Ollama needs them; by default the embedded default and DEBUG
  allow loopback and private networks, a production deployment none).

Checked when a credential is saved and again, with a fresh DNS answer, when a run builds
its model (a name that resolved to a public address at save time may not any more).
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings

from flows.components.safe_http import CGN, METADATA_ADDRESSES, IPAddress, embedded_ipv4

DEFAULT_PORTS = {"http": 80, "https": 443}


class EndpointRefused(ValueError):
    """The message is user-facing."""


def _networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [
        ipaddress.ip_network(n.strip(), strict=False)
        for n in getattr(settings, "FLOWDECK_MODEL_PRIVATE_NETWORKS", ()) or ()
        if n.strip()
    ]


def _never(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return _never(inner)
    if ip.is_loopback:
        return False  # ::1 sits inside IPv6's reserved ::/8: loopback is decided below
    return (
        ip in METADATA_ADDRESSES
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _private(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return _private(inner)
    return (
        ip.is_loopback
        or ip.is_private
        or not ip.is_global
        or (isinstance(ip, ipaddress.IPv4Address) and ip in CGN)
    )


def _addresses(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []  # unresolvable now: nothing to check; connecting will fail the same way
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


@lru_cache(maxsize=1)
def _own_services() -> frozenset[tuple[str, int]]:
    """(address, port) of the platform's database, Redis, broker and web server."""
    database = settings.DATABASES["default"]
    urls = [getattr(settings, "REDIS_URL", ""), getattr(settings, "CELERY_BROKER_URL", "")]
    if database.get("HOST"):
        urls.append(f"postgres://{database['HOST']}:{database.get('PORT') or 5432}")
    own: set[tuple[str, int]] = set()
    for url in filter(None, urls):
        parts = urlsplit(str(url))
        if parts.hostname and parts.port:
            for ip in _addresses(parts.hostname, parts.port):
                own.add((str(ip), parts.port))
    web_port = int(getattr(settings, "FLOWDECK_WEB_PORT", 0) or 0)
    if web_port:
        own |= {("127.0.0.1", web_port), ("::1", web_port)}
    return frozenset(own)


def check_model_endpoint(base_url: str) -> None:
    """EndpointRefused if `base_url` may not be used as a model endpoint (empty: the
    provider's own public endpoint, always allowed)."""
    if not base_url:
        return
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in DEFAULT_PORTS or not host:
        raise EndpointRefused("Enter an http(s) URL.")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise EndpointRefused("The port is not valid.") from exc
    allowed = _networks()
    for ip in _addresses(host, port):
        if _never(ip):
            raise EndpointRefused(
                f"{host} is a link-local or cloud metadata address ({ip}): never a model endpoint."
            )
        if (str(ip), port) in _own_services():
            raise EndpointRefused(f"{host}:{port} is one of the platform's own services.")
        if _private(ip) and not any(ip in net for net in allowed):
            raise EndpointRefused(
                f"{host} is a loopback or private address ({ip}); the platform admin allows "
                "such endpoints with FLOWDECK_MODEL_PRIVATE_NETWORKS."
            )
