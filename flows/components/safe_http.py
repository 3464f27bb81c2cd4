"""SSRF-safe HTTP GET for `tool.http_get`.

- only http(s), no credentials in the URL, the host must be on the workspace's allowlist
  (`Workspace.http_allowlist`: exact host names, or `*.example.com` for subdomains);
- the host is resolved once; every address must be public (loopback, private, CGN,
  link-local, ULA, multicast, reserved, unspecified and cloud metadata addresses are
  refused, including IPv4-mapped/compatible IPv6, 6to4, Teredo and NAT64 forms), and the
  connection goes to the checked address (Host header and TLS SNI keep the name), so a
  second DNS answer cannot swap in an internal address;
- redirects are followed by hand, each hop checked the same way; size and time limits;
- proxies from the environment are ignored (they would bypass the address check).

`FLOWDECK_HTTP_GET_ALLOWED_NETWORKS` (a setting, empty by default) exempts networks from
the address check; it exists for tests and air-gapped installs that proxy on purpose.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from django.conf import settings

MAX_REDIRECTS = 5
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}
CGN = ipaddress.ip_network("100.64.0.0/10")
NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(Exception):
    """The URL, a redirect hop or the answer broke a rule; the message is user-facing."""


@dataclass(frozen=True)
class FetchResult:
    url: str
    status: int
    content_type: str
    text: str
    truncated: bool


def _extra_allowed() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = getattr(settings, "FLOWDECK_HTTP_GET_ALLOWED_NETWORKS", ()) or ()
    return [ipaddress.ip_network(n, strict=False) for n in networks]


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (deprecated IPv4-compatible)
        return ipaddress.IPv4Address(int(ip))
    return None


def address_blocked(ip: IPAddress) -> bool:
    """Whether `ip` must never be contacted (see the module docstring)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return True
        inner = embedded_ipv4(ip)
        if inner is not None:
            return address_blocked(inner)
    if any(ip in net for net in _extra_allowed()):
        return False
    if ip in METADATA_ADDRESSES or (isinstance(ip, ipaddress.IPv4Address) and ip in CGN):
        return True
    checks = [
        not ip.is_global,
        ip.is_private,
        ip.is_loopback,
        ip.is_link_local,
        ip.is_multicast,
        ip.is_reserved,
        ip.is_unspecified,
    ]
    if isinstance(ip, ipaddress.IPv6Address):
        checks.append(ip.is_site_local)
    return any(checks)


def normalise_host(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise FetchRefused("The host name is not valid.") from exc


def host_allowed(host: str, allowlist: list[str]) -> bool:
    """Exact names, or `*.example.com` entries for subdomains of example.com."""
    for entry in allowlist or []:
        if not isinstance(entry, str) or not entry.strip():
            continue
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return True
        elif host == entry:
            return True
    return False


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, resolved once (an IP literal is its own answer)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchRefused(f"Could not resolve {host}.") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchRefused(f"Could not resolve {host}.")
    return addresses


async def check_url(url: str, allowlist: list[str]) -> tuple[httpx.URL, str, IPAddress]:
    """(url, host, the checked address to connect to) or FetchRefused."""
    if len(url) > 2048:
        raise FetchRefused("The URL is too long.")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise FetchRefused("Only http and https URLs can be fetched.")
    if parts.username or parts.password or "@" in parts.netloc:
        raise FetchRefused("URLs with credentials are not allowed.")
    if not parts.hostname:
        raise FetchRefused("The URL has no host.")
    host = normalise_host(parts.hostname)
    if not host_allowed(host, allowlist):
        raise FetchRefused(f"{host} is not on this workspace's HTTP allowlist.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise FetchRefused("The URL's port is not valid.") from exc
    addresses = await resolve(host, port)
    blocked = [a for a in addresses if address_blocked(a)]
    if blocked:
        raise FetchRefused(f"{host} resolves to a non-public address ({blocked[0]}); refused.")
    return httpx.URL(url), host, addresses[0]


async def safe_get(
    url: str, allowlist: list[str], *, max_bytes: int = 256 * 1024, timeout: float = 10.0
) -> FetchResult:
    """GET `url` under the rules above; FetchRefused with a clear message otherwise."""
    try:
        return await asyncio.wait_for(_get(url, allowlist, max_bytes), timeout=timeout)
    except TimeoutError as exc:
        raise FetchRefused(f"The request took longer than {timeout:g}s.") from exc


async def _get(url: str, allowlist: list[str], max_bytes: int) -> FetchResult:
    async with httpx.AsyncClient(
        trust_env=False, follow_redirects=False, timeout=httpx.Timeout(10.0)
    ) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            target, host, address = await check_url(url, allowlist)
            pinned = target.copy_with(host=str(address))
            host_header = host if target.port is None else f"{host}:{target.port}"
            request = client.build_request(
                "GET",
                pinned,
                headers={"Host": host_header, "User-Agent": "Flowdeck-http_get/1"},
                extensions={"sni_hostname": host} if target.scheme == "https" else {},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise FetchRefused(f"Could not fetch {host} ({type(exc).__name__}).") from exc
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    if not location:
                        raise FetchRefused("A redirect without a Location.")
                    url = urljoin(str(target), location)
                    continue
                body = bytearray()
                truncated = False
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        del body[max_bytes:]
                        truncated = True
                        break
                encoding = response.encoding or "utf-8"
                return FetchResult(
                    url=str(target),
                    status=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    text=bytes(body).decode(encoding, errors="replace"),
                    truncated=truncated,
                )
            finally:
                await response.aclose()
    raise FetchRefused(f"More than {MAX_REDIRECTS} redirects.")
