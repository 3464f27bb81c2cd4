"""tool.http_get: SSRF targets are refused — directly and on every redirect hop — and the
internal server behind them is never contacted; size and time limits hold.

A "public" test server listens on 127.0.0.2, which the tests exempt from the address check
with FLOWDECK_HTTP_GET_ALLOWED_NETWORKS (and nothing else); an "internal" server on
127.0.0.1 stands for everything that must stay unreachable.
"""

from __future__ import annotations

import ipaddress

import pytest
from django.test import override_settings

from flows.components.base import BuildEnv, NodeError
from flows.components.registry import get_component
from flows.components.safe_http import address_blocked
from tests.fakes.runner import RecordingContext, run_component
from tests.fakes.web import WebServer

pytestmark = pytest.mark.django_db

PUBLIC_HOST = "127.0.0.2"


@pytest.fixture
def public():
    with (
        override_settings(FLOWDECK_HTTP_GET_ALLOWED_NETWORKS=[f"{PUBLIC_HOST}/32"]),
        WebServer(PUBLIC_HOST) as server,
    ):
        yield server


@pytest.fixture
def internal():
    with WebServer("127.0.0.1") as server:
        yield server


def fetch(workspace, url: str, **params):
    component = get_component("tool.http_get")
    validated = component.Params.model_validate(params)
    built = component.build(validated, BuildEnv(workspace))
    ctx = RecordingContext(workspace.pk)
    return run_component(component, validated, built, {"url": url}, ctx)


def allow(workspace, *hosts: str) -> None:
    workspace.http_allowlist = [PUBLIC_HOST, *hosts]
    workspace.save()


def test_an_allowlisted_public_host_is_fetched(workspace_a, public):
    allow(workspace_a)
    out = fetch(workspace_a, public.url("/hello"))
    assert out["result"] == "HTTP 200\npage /hello"
    assert public.hits[0]["host"] == f"{PUBLIC_HOST}:{public.port}"


def test_a_host_not_on_the_allowlist_is_refused(workspace_a, public):
    workspace_a.http_allowlist = []
    workspace_a.save()
    with pytest.raises(NodeError, match="allowlist"):
        fetch(workspace_a, public.url("/"))
    assert public.hits == []


SSRF_TARGETS = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]:{port}/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f.0.0.1:{port}/",
    "http://127.1:{port}/",
]


@pytest.mark.parametrize("template", SSRF_TARGETS)
def test_internal_addresses_are_refused_even_when_allowlisted(workspace_a, internal, template):
    url = template.format(port=internal.port)
    from urllib.parse import urlsplit

    allow(workspace_a, urlsplit(url).hostname)
    with pytest.raises(NodeError, match="non-public|resolve"):
        fetch(workspace_a, url)
    assert internal.hits == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/admin",
        "http://localhost:{port}/",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://[::1]:{port}/",
    ],
)
def test_redirects_to_internal_addresses_are_refused_on_every_hop(
    workspace_a, public, internal, target
):
    target = target.format(port=internal.port)
    from urllib.parse import quote, urlsplit

    allow(workspace_a, urlsplit(target).hostname)
    hop2 = public.url("/redirect?to=" + quote(target, safe=""))
    hop1 = public.url("/redirect?to=" + quote(hop2, safe=""))
    with pytest.raises(NodeError, match="non-public"):
        fetch(workspace_a, hop1)
    assert [h["path"].split("?")[0] for h in public.hits] == ["/redirect", "/redirect"]
    assert internal.hits == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "Only http"),
        ("gopher://127.0.0.2/", "Only http"),
        ("http://user:pw@127.0.0.2/", "credentials"),
        ("http://example.invalid/", "allowlist"),
    ],
)
def test_other_refusals_are_clear(workspace_a, public, url, message):
    allow(workspace_a)
    with pytest.raises(NodeError, match=message):
        fetch(workspace_a, url)
    assert public.hits == []


def test_redirect_to_a_non_allowlisted_host_or_scheme_is_refused(workspace_a, public):
    allow(workspace_a)
    with pytest.raises(NodeError, match="allowlist"):
        fetch(workspace_a, public.url("/redirect?to=http://elsewhere.invalid/"))
    with pytest.raises(NodeError, match="Only http"):
        fetch(workspace_a, public.url("/redirect?to=file:///etc/passwd"))


def test_redirect_loops_stop(workspace_a, public):
    allow(workspace_a)
    with pytest.raises(NodeError, match="redirects"):
        fetch(
            workspace_a,
            public.url(
                "/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/redirect%25253Fto%25253D/redirect%2525253Fto%2525253D/redirect%252525253Fto%252525253D/x"
            ),
        )


def test_bodies_are_capped_and_slow_servers_time_out(workspace_a, public):
    allow(workspace_a)
    out = fetch(workspace_a, public.url("/big"), max_bytes=1000, max_chars=5000)
    assert out["result"].startswith("HTTP 200 (truncated)\n")
    assert len(out["result"].split("\n", 1)[1]) == 1000
    with pytest.raises(NodeError, match="longer than"):
        # The server answers after 30 s: sixty times the timeout, so a slow machine cannot
        # make the answer arrive in time.
        fetch(workspace_a, public.url("/slow?s=30"), timeout_seconds=0.5)


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("127.0.0.1", True),
        ("::ffff:10.1.2.3", True),
        ("::ffff:8.8.8.8", False),
        ("100.127.255.254", True),
        ("169.254.169.254", True),
        ("fc00::1", True),
        ("2001::1", True),  # Teredo
        ("224.0.0.1", True),
        ("255.255.255.255", True),
    ],
)
def test_address_policy(address, blocked):
    assert address_blocked(ipaddress.ip_address(address)) is blocked
