"""The tenancy matrix: every workspace route, every method, every kind of caller.

Routes are DISCOVERED from the URL resolver — every page under `w/<slug>/` and every API
route under `api/w/<slug>/` — so a route added tomorrow is checked tomorrow. For each
route and method:

- an anonymous caller is refused (pages: 302 to the login page; API: 401);
- a member of another workspace gets 404 (and their API token 401), so names don't leak;
- a member of workspace_a who asks for another workspace's object gets 404;
- each role of workspace_a gets what the route declares (an API operation's
  `@minimum_role`, a page's `role_map`): below the minimum role a 403, at or above it the
  route's success status.

WebSocket routes under `/ws/w/<slug>/` (from config.asgi) are checked the same way against
`WS_ROLE_TABLE`: a refused handshake for strangers and roles below the minimum.

To add a route: declare its minimum role where it is declared; add a `REQUESTS` line if a
write needs a body to do real work, and, if its path has a parameter nobody has used yet (`<flow_id>`, `<run_id>`, ...), one
factory to `PARAM_FACTORIES` that creates a real object in the given workspace.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.shortcuts import resolve_url
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.models import Invitation, Membership, Role, User, Workspace
from accounts.services import api_token_create, hash_secret, workspace_create

VIEWER, EDITOR, ADMIN, OWNER = Role.VIEWER, Role.EDITOR, Role.ADMIN, Role.OWNER
ROLES_ASCENDING = [VIEWER, EDITOR, ADMIN, OWNER]
WRITE_OK = frozenset({200, 201, 202, 204, 301, 302, 303})


@dataclass(frozen=True)
class Rule:
    """Who may call a route: `minimum` role and up; lower roles get 403.

    `ok` is what an allowed caller gets (GET: 200 unless told otherwise); `data` is the
    request body for writes (JSON for the API, form fields for pages), so that an allowed
    call does real work rather than stopping at validation — a callable when each call
    needs a fresh body (unique names).
    """

    minimum: str
    ok: frozenset[int] = field(default=frozenset())
    data: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
    multipart: bool = False  # an API write sent as multipart/form-data (file uploads)

    def body(self) -> dict[str, Any]:
        return (self.data() if callable(self.data) else self.data) or {}


@dataclass(frozen=True)
class Request:
    """What the matrix sends to a route (see Rule): its body and other success statuses."""

    ok: frozenset[int] = field(default=frozenset())
    data: Any = None
    multipart: bool = False


_serial = itertools.count(1)


def unique(name: str) -> str:
    return f"{name}-{next(_serial)}"


def _demo_graph() -> dict[str, Any]:
    def node(node_id: str, component: str, params: dict[str, Any], x: int) -> dict[str, Any]:
        return {
            "id": node_id,
            "component": component,
            "params": params,
            "position": {"x": x, "y": 0},
        }

    return {
        "nodes": [
            node("input", "io.chat_input", {}, 0),
            node("model", "llm.demo", {"reply": "hello", "delay_ms": 0}, 250),
            node("output", "io.text_output", {}, 500),
        ],
        "edges": [
            {"source": "input", "source_port": "text", "target": "model", "target_port": "prompt"},
            {"source": "model", "source_port": "text", "target": "output", "target_port": "text"},
        ],
    }


DEMO_GRAPH = _demo_graph()


# --- What the matrix sends ------------------------------------------------------------------
# Who may call a route is declared by the route itself (API: @minimum_role under the route
# decorator; pages: role_map) and read from there (declared_minimum). This table only says
# what to send so that an allowed call does real work: a body for writes, or other success
# statuses. Key: "<METHOD> /<path>", parameters written as <name>.
REQUESTS: dict[str, Request] = {
    # accounts pages
    "POST /w/<slug>/members/": Request(
        data={"action": "invite", "email": "new@example.com", "role": "viewer"}
    ),
    # every member holds their own tokens
    "POST /w/<slug>/tokens/": Request(data={"name": "matrix"}),
    # accounts API
    # pages around the editor (flows/views.py, runs/views.py)
    "POST /w/<slug>/flows/": Request(data={"action": "create", "name": "matrix"}),
    # knowledge pages (knowledge/views.py): editors create and change settings
    "POST /w/<slug>/knowledge/": Request(data=lambda: {"action": "create", "name": unique("kb")}),
    "POST /w/<slug>/knowledge/<kb_id>/": Request(
        data=lambda: {"action": "settings", "name": unique("kb"), "chunk_size": "800"}
    ),
    # flows API: viewers read; editors build; admins hold credentials and the whitelist
    "POST /api/w/<slug>/flows/validate": Request(data={"graph": DEMO_GRAPH}),
    "POST /api/w/<slug>/flows": Request(data={"name": "new", "graph": DEMO_GRAPH}),
    "PUT /api/w/<slug>/flows/<flow_id>": Request(data={"name": "renamed"}),
    "POST /api/w/<slug>/flows/<flow_id>/versions": Request(data={"graph": DEMO_GRAPH}),
    # the working draft: kept, not validated (an incomplete graph is fine)
    "PUT /api/w/<slug>/flows/<flow_id>/draft": Request(
        data={"graph": {"nodes": DEMO_GRAPH["nodes"][:1], "edges": []}, "base_revision": 0}
    ),
    "POST /api/w/<slug>/flows/import": Request(
        data={
            "document": {
                "format": "flowdeck.flow",
                "format_version": 1,
                "name": "imported",
                "graph": DEMO_GRAPH,
            }
        }
    ),
    "POST /api/w/<slug>/flows/import/check": Request(
        data={"document": {"format": "flowdeck.flow", "format_version": 1, "graph": DEMO_GRAPH}}
    ),
    "POST /api/w/<slug>/router/preview": Request(
        data={"params": {"rules": [{"output": "human", "pattern": "人工"}]}, "text": "我要人工客服"}
    ),
    "POST /api/w/<slug>/credentials": Request(
        data=lambda: {"name": unique("new"), "provider": "openai", "api_key": "sk-new"}
    ),
    "PUT /api/w/<slug>/credentials/<credential_id>": Request(
        data=lambda: {"name": unique("renamed")}
    ),
    "PUT /api/w/<slug>/whitelist": Request(data={"changes": {"llm.demo": True}}),
    "POST /api/w/<slug>/documents": Request(data={"title": "t", "content": "text"}),
    # the run list's "compare the two selected": without two runs it goes back to the list
    "GET /w/<slug>/runs/compare/": Request(ok=frozenset({302})),
    # runs API: viewers watch and replay; editors run, cancel and re-run
    "POST /api/w/<slug>/flows/<flow_id>/runs": Request(data={"inputs": {"input": "hi"}}),
    # publishing (chat app): editors publish a version, from the API and the versions page
    "POST /api/w/<slug>/flows/<flow_id>/publication": Request(data={"version": 1}),
    "POST /w/<slug>/flows/<flow_id>/versions/": Request(data={"action": "publish", "version": 1}),
    # calls from outside: streamed, so the matrix reads the status without waiting for a run
    "POST /api/w/<slug>/flows/<flow_id>/run": Request(
        data={"inputs": {"input": "hi"}, "version": 1, "stream": True}
    ),
    # conversations: viewers read them; editors start, rename and delete them
    "POST /api/w/<slug>/flows/<flow_id>/conversations": Request(data={"title": "matrix"}),
    "PATCH /api/w/<slug>/conversations/<conversation_id>": Request(data={"title": "renamed"}),
    "POST /api/w/<slug>/v1/chat/completions": Request(
        data=lambda: {
            "model": _published_model("acme"),
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
    ),
    # embeds: viewers list them; editors make, change and delete them (API and page)
    "POST /api/w/<slug>/flows/<flow_id>/embeds": Request(
        data={"name": "site", "allowed_origins": ["https://shop.example.com"]}
    ),
    "PUT /api/w/<slug>/embeds/<embed_id>": Request(
        data={"name": "site", "allowed_origins": ["https://shop.example.com"]}
    ),
    "POST /w/<slug>/flows/<flow_id>/embeds/": Request(
        data={
            "action": "create",
            "name": "site",
            "allowed_origins": "https://shop.example.com",
            "visitor_runs_per_minute": "5",
            "runs_per_minute": "60",
        },
        ok=frozenset({302}),
    ),
    # human approval: editors (and the node's role) decide a waiting run's approval
    "POST /api/w/<slug>/runs/<run_id>/approvals/<node_id>": Request(
        data={"decision": "reject", "comment": "matrix"}
    ),
    # budgets (usage app): admins set the workspace's and any key's, on pages and the API
    "POST /w/<slug>/settings/usage/": Request(data={"monthly_tokens": "5000"}),
    "POST /w/<slug>/tokens/<token_id>/budget/": Request(data={"monthly_tokens": "500"}),
    "PUT /api/w/<slug>/usage/budget": Request(data={"monthly_tokens": 5000, "monthly_cost": "2.5"}),
    # knowledge API: viewers list, read and search; editors manage and upload
    "POST /api/w/<slug>/knowledge-bases": Request(data=lambda: {"name": unique("kb")}),
    "PUT /api/w/<slug>/knowledge-bases/<kb_id>": Request(data=lambda: {"name": unique("kb")}),
    "POST /api/w/<slug>/knowledge-bases/<kb_id>/search": Request(
        data={"query": "refund", "mode": "keyword"}
    ),
    "POST /api/w/<slug>/knowledge-bases/<kb_id>/documents": Request(
        data=lambda: {"files": _text_file()}, multipart=True
    ),
}


def _published_model(slug: str) -> str:
    """The model name of a fresh published flow of workspace `slug` (the matrix's A)."""
    from chat.services import flow_publish

    workspace = Workspace.objects.get(slug=slug)
    owner = Membership.objects.get(workspace=workspace, role=OWNER)
    flow = _flow(workspace, owner.user)
    return flow_publish(workspace=workspace, acting=owner, flow=flow, version_number=1).model_name


def _text_file() -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("faq.txt", f"Refunds take {unique('n')} days.".encode())


# WebSocket routes (from config.asgi's URLRouter): the minimum role that may connect.
# Below it, anonymous, other tenants and other workspaces' tokens: the handshake is refused.
WS_ROLE_TABLE: dict[str, str] = {
    "WS /ws/w/<slug>/exec": VIEWER,  # viewers watch and replay; running is checked per message
    "WS /ws/w/<slug>/knowledge": VIEWER,  # ingestion progress; the knowledge base per message
}


# --- Path parameters: real objects of a workspace -----------------------------------------
# name -> factory(workspace, owner) returning the value to put in the path. Each call makes
# a fresh object, so a write that consumes one (revoke, delete, cancel) never starves the next.
ParamFactory = Callable[[Workspace, User], Any]


def _token_id(workspace: Workspace, owner: User) -> int:
    return api_token_create(workspace=workspace, user=owner, name="matrix").token.pk


def _membership_id(workspace: Workspace, owner: User) -> int:
    user = User.objects.create_user(f"member-{User.objects.count()}@example.com", None)
    return Membership.objects.create(workspace=workspace, user=user, role=Role.VIEWER).pk


def _invitation_id(workspace: Workspace, owner: User) -> int:
    n = Invitation.objects.count()
    return Invitation.objects.create(
        workspace=workspace,
        email=f"invitee-{n}@example.com",
        token_hash=hash_secret(f"matrix-{n}"),
        invited_by=owner,
        expires_at=timezone.now() + settings.INVITATION_TTL,
    ).pk


def _flow(workspace: Workspace, owner: User) -> Any:
    """A flow with one saved version, made the way the API makes it."""
    from flows.services import flow_create

    return flow_create(
        workspace=workspace, acting=_acting(workspace, owner), name="matrix", graph=DEMO_GRAPH
    )


def _flow_id(workspace: Workspace, owner: User) -> int:
    return _flow(workspace, owner).pk


def _run_id(workspace: Workspace, owner: User) -> str:
    """A finished run of a fresh flow (finished, so it holds no concurrency slot)."""
    from runs.models import Run, RunStatus

    flow = _flow(workspace, owner)
    now = timezone.now()
    return str(
        Run.objects.create(
            workspace=workspace,
            flow=flow,
            flow_version=flow.versions.get(),
            session_id="matrix",
            started_by=owner,
            inputs={"input": "hi"},
            status=RunStatus.SUCCEEDED,
            started_at=now,
            finished_at=now,
        ).pk
    )


def _acting(workspace: Workspace, owner: User) -> Membership:
    return Membership.objects.get(workspace=workspace, user=owner)


def _credential_id(workspace: Workspace, owner: User) -> int:
    from flows.services import credential_create

    return credential_create(
        workspace=workspace,
        acting=_acting(workspace, owner),
        name=unique("matrix"),
        provider="openai",
        base_url="https://llm.example.com/v1",
        api_key="sk-matrix",
    ).pk


def _kb_id(workspace: Workspace, owner: User) -> int:
    from knowledge.services import kb_create

    return kb_create(workspace=workspace, acting=_acting(workspace, owner), name=unique("kb")).pk


def _document_id(workspace: Workspace, owner: User) -> int:
    from flows.services import document_create

    return document_create(
        workspace=workspace, acting=_acting(workspace, owner), title="doc", content="text"
    ).pk


def _knowledge_document_id(workspace: Workspace, owner: User) -> int:
    """A knowledge document (queued: its ingestion is never dispatched in this test) in the
    workspace's newest knowledge base: the one `<kb_id>` made just before, when the path
    has both."""
    from knowledge.models import KnowledgeBase
    from knowledge.services import document_create_text

    kb = KnowledgeBase.objects.filter(workspace=workspace).order_by("-pk").first()
    if kb is None:
        kb = KnowledgeBase.objects.get(pk=_kb_id(workspace, owner))
    upload = document_create_text(
        workspace=workspace,
        acting=_acting(workspace, owner),
        kb=kb,
        name="doc",
        text=f"text {unique('doc')}",
    )
    return upload.document.pk


def _conversation_id(workspace: Workspace, owner: User) -> str:
    from chat.services import conversation_create

    return str(
        conversation_create(
            workspace=workspace,
            acting=_acting(workspace, owner),
            flow=_flow(workspace, owner),
        ).pk
    )


def _embed_id(workspace: Workspace, owner: User) -> int:
    from chat.embeds import EmbedSettings, embed_create

    return embed_create(
        workspace=workspace,
        acting=_acting(workspace, owner),
        flow=_flow(workspace, owner),
        settings=EmbedSettings(name="site", allowed_origins=["https://shop.example.com"]),
    ).pk


def _approval_node_id(workspace: Workspace, owner: User) -> str:
    """A pending approval of the workspace's newest run (the one `<run_id>` made just
    before), which then waits for it."""
    from runs.models import Approval, Run, RunStatus

    run = Run.objects.filter(workspace=workspace).order_by("-created_at").first()
    if run is None:
        run = Run.objects.get(pk=_run_id(workspace, owner))
    Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING, finished_at=None)
    node_id = unique("check")
    Approval.objects.create(
        workspace=workspace, run=run, node_id=node_id, prompt="ok?", role="editor", value="v"
    )
    return node_id


PARAM_FACTORIES: dict[str, ParamFactory] = {
    "token_id": _token_id,
    "membership_id": _membership_id,
    "invitation_id": _invitation_id,
    "flow_id": _flow_id,
    "run_id": _run_id,
    "other_id": _run_id,  # the second run of a comparison
    "number": lambda workspace, owner: 1,  # a version number: every factory flow has version 1
    "credential_id": _credential_id,
    "document_id": _document_id,
    "kb_id": _kb_id,
    "doc_id": _knowledge_document_id,
    "conversation_id": _conversation_id,
    "embed_id": _embed_id,
    "node_id": _approval_node_id,
}


# --- Discovery ---------------------------------------------------------------------------
TENANT_PREFIXES = ("/w/<slug>/", "/api/w/<slug>/")
IGNORED_METHODS = {"HEAD", "OPTIONS", "TRACE"}


@dataclass(frozen=True)
class Route:
    path: str  # "/api/w/<slug>/runs/<run_id>"
    method: str
    pattern: URLPattern

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def is_api(self) -> bool:
        return self.path.startswith("/api/")

    @property
    def params(self) -> list[str]:
        return [p for p in re.findall(r"<(\w+)>", self.path) if p != "slug"]


def _walk(resolver: URLResolver, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry, route)
        else:
            yield route, entry


def _closure(func: Any, name: str) -> Any:
    try:
        return inspect.getclosurevars(func).nonlocals.get(name)
    except (TypeError, ValueError):
        return None


def _methods(pattern: URLPattern) -> list[str]:
    """The HTTP methods a view answers: ninja operations, a class view's handlers, or a
    function view's `require_http_methods` list (GET when it has none)."""
    callback = pattern.callback
    path_view = _closure(callback, "self")  # django-ninja's PathView behind its view wrapper
    if path_view is not None and hasattr(path_view, "operations"):
        return [m for op in path_view.operations for m in op.methods]
    view_class = getattr(callback, "view_class", None)
    if view_class is not None:
        return [
            m.upper()
            for m in view_class.http_method_names
            if hasattr(view_class, m) and m.upper() not in IGNORED_METHODS
        ]
    func = callback
    while func is not None:
        allowed = _closure(func, "request_method_list")
        if allowed:
            return [m.upper() for m in allowed]
        func = getattr(func, "__wrapped__", None)
    return ["GET"]


def discover_routes() -> list[Route]:
    """Every (path, method) under /w/<slug>/ and /api/w/<slug>/, from the live URLconf."""
    found: dict[str, Route] = {}
    for raw, pattern in _walk(get_resolver()):
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", raw)
        if not path.startswith(TENANT_PREFIXES):
            continue
        for method in _methods(pattern):
            if method not in IGNORED_METHODS:
                route = Route(path, method, pattern)
                found.setdefault(route.key, route)
    return sorted(found.values(), key=lambda r: (r.path, r.method))


ROUTES = discover_routes()


def declared_minimum(route: Route) -> str | None:
    """The minimum role the route itself declares: an API operation's @minimum_role, a
    page's `role_map`, a plain view's @minimum_role. None when it declares none."""
    from accounts.api_auth import declared_role

    callback = route.pattern.callback
    path_view = _closure(callback, "self")
    if path_view is not None and hasattr(path_view, "operations"):
        for operation in path_view.operations:
            if route.method in operation.methods:
                return declared_role(operation.view_func)
        return None
    view_class = getattr(callback, "view_class", None)
    if view_class is not None:
        return getattr(view_class, "role_map", {}).get(route.method)
    return declared_role(callback)


def rule_for(route: Route) -> Rule:
    """The route's declared minimum role, with the request the matrix sends for it."""
    minimum = declared_minimum(route)
    if minimum is None:
        pytest.fail(
            f"{route.key} declares no minimum role: an API route takes @minimum_role(...), "
            "a page its role_map.",
            pytrace=False,
        )
    entry = REQUESTS.get(route.key, Request())
    ok = entry.ok or (frozenset({200}) if route.method == "GET" else WRITE_OK)
    return Rule(minimum, ok, entry.data, entry.multipart)


def serves_flow_keys(route: Route) -> bool:
    """Whether the route declares @for_flow_keys (a list it filters to a key's flows)."""
    callback = route.pattern.callback
    path_view = _closure(callback, "self")
    if path_view is not None and hasattr(path_view, "operations"):
        view = next(o.view_func for o in path_view.operations if route.method in o.methods)
    else:
        view = callback
    return bool(getattr(view, "for_flow_keys", False))


# --- Callers -----------------------------------------------------------------------------
@dataclass
class World:
    workspace_a: Workspace
    workspace_b: Workspace
    members: dict[str, User]  # role -> member of workspace_a
    outsider: User  # owner of workspace_b


@pytest.fixture
def world(db: None) -> World:
    return build_world()


def build_world() -> World:
    members = {role: User.objects.create_user(f"{role}@a.example.com", None) for role in Role}
    workspace_a = workspace_create(name="Acme", slug="acme", owner=members[OWNER])
    for role in (VIEWER, EDITOR, ADMIN):
        Membership.objects.create(workspace=workspace_a, user=members[role], role=role)
    outsider = User.objects.create_user("owner@b.example.com", None)
    workspace_b = workspace_create(name="Bravo", slug="bravo", owner=outsider)
    return World(workspace_a, workspace_b, members, outsider)


def _path_for(route: Route, workspace: Workspace, owner: User) -> str:
    values = {"slug": workspace.slug}
    for name in route.params:
        factory = PARAM_FACTORIES.get(name)
        if factory is None:
            pytest.fail(
                f"{route.key}: no factory for the path parameter <{name}>. Add one to "
                f"PARAM_FACTORIES in tests/test_tenancy_matrix.py that creates a real object "
                f"in the given workspace and returns its id, e.g.\n"
                f'    "{name}": lambda workspace, owner: make_it(workspace, owner).pk,',
                pytrace=False,
            )
        values[name] = factory(workspace, owner)
    return re.sub(r"<(\w+)>", lambda m: str(values[m.group(1)]), route.path)


def _call(
    route: Route, path: str, rule: Rule, user: User | None, *, bearer: str | None = None
) -> Any:
    client = Client()
    if user is not None and bearer is None:
        client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if route.method != "GET":
        if route.is_api and not rule.multipart:
            kwargs.update(data=rule.body(), content_type="application/json")
        else:
            kwargs["data"] = rule.body()
    # A streaming response (SSE) is never iterated: its status and headers are the answer.
    return client.generic(route.method, path, **_encode(kwargs))


def _encode(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`Client.generic` takes a raw body: encode it the way get()/post() would."""
    data = kwargs.pop("data", None)
    content_type = kwargs.pop("content_type", None)
    if data is None:
        return kwargs
    if content_type == "application/json":
        return {**kwargs, "data": json.dumps(data), "content_type": content_type}
    return {**kwargs, "data": encode_multipart(BOUNDARY, data), "content_type": MULTIPART_CONTENT}


def _describe(response: Any) -> str:
    body = b"" if getattr(response, "streaming", False) else response.content[:300]
    return f"{response.status_code} {body!r}"


# --- The matrix --------------------------------------------------------------------------
def test_routes_are_discovered() -> None:
    """Discovery itself works: today's accounts routes are found with their methods."""
    keys = {route.key for route in ROUTES}
    assert {
        "GET /w/<slug>/",
        "GET /w/<slug>/members/",
        "POST /w/<slug>/members/",
        "GET /w/<slug>/tokens/",
        "GET /api/w/<slug>/",
        "GET /api/w/<slug>/members",
    } <= keys


def test_request_table_has_no_stale_entries() -> None:
    """Every REQUESTS line names a route that exists (a renamed route must be re-keyed)."""
    stale = sorted(set(REQUESTS) - {route.key for route in ROUTES})
    assert not stale, f"REQUESTS names routes that no longer exist: {stale}"


@pytest.mark.parametrize("route", ROUTES, ids=[route.key for route in ROUTES])
def test_route_refuses_strangers_and_grants_by_role(route: Route, world: World) -> None:
    rule = rule_for(route)
    owner_a = world.members[OWNER]
    fresh = lambda: _path_for(route, world.workspace_a, owner_a)  # noqa: E731

    # Anonymous: pages send to the login page, the API answers 401.
    path = fresh()
    response = _call(route, path, rule, None)
    if route.is_api:
        assert response.status_code == 401, f"anonymous {route.key}: {_describe(response)}"
    else:
        login = resolve_url(settings.LOGIN_URL)
        assert response.status_code == 302, f"anonymous {route.key}: {_describe(response)}"
        assert response["Location"].startswith(f"{login}?next="), response["Location"]

    # A member of another workspace: 404 by session, 401 by their own workspace's token.
    response = _call(route, fresh(), rule, world.outsider)
    assert response.status_code == 404, f"outsider {route.key}: {_describe(response)}"
    if route.is_api:
        token = api_token_create(
            workspace=world.workspace_b, user=world.outsider, name="outsider"
        ).secret
        response = _call(route, fresh(), rule, world.outsider, bearer=token)
        assert response.status_code == 401, f"outsider token {route.key}: {_describe(response)}"

    # The owner of workspace_a asking for workspace_b's objects through workspace_a's URL.
    if route.params:
        foreign = _path_for(route, world.workspace_b, world.outsider)
        foreign = foreign.replace(f"/w/{world.workspace_b.slug}/", f"/w/{world.workspace_a.slug}/")
        response = _call(route, foreign, rule, owner_a)
        assert response.status_code == 404, f"foreign object {foreign}: {_describe(response)}"

    # Each role: refused below the minimum (weakest first, so refusals see untouched data).
    minimum_rank = ROLES_ASCENDING.index(Role(rule.minimum))
    for rank, role in enumerate(ROLES_ASCENDING):
        member = world.members[role]
        callers: list[tuple[str, str | None]] = [("session", None)]
        if route.is_api:
            token = api_token_create(workspace=world.workspace_a, user=member, name="m").secret
            callers.append(("token", token))
        for how, bearer in callers:
            response = _call(route, fresh(), rule, member, bearer=bearer)
            who = f"{role} ({how}) {route.key}"
            if rank < minimum_rank:
                assert response.status_code == 403, f"{who} must be refused: {_describe(response)}"
            else:
                assert response.status_code in rule.ok, (
                    f"{who} must be allowed ({sorted(rule.ok)}): {_describe(response)}"
                )


# --- WebSocket routes --------------------------------------------------------------------
def discover_ws_routes() -> list[str]:
    """Every WebSocket path under /ws/w/<slug>/ that the ASGI application routes."""
    import config.asgi

    paths = []
    for pattern in config.asgi.websocket_urlpatterns:
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", str(pattern.pattern))
        if path.startswith("/ws/w/<slug>/"):
            paths.append(f"WS {path}")
    return sorted(paths)


WS_ROUTES = discover_ws_routes()


def test_websocket_routes_are_discovered_and_in_the_table() -> None:
    assert "WS /ws/w/<slug>/exec" in WS_ROUTES
    missing = [key for key in WS_ROUTES if key not in WS_ROLE_TABLE]
    assert not missing, f"add these WebSocket routes to WS_ROLE_TABLE: {missing}"
    stale = sorted(set(WS_ROLE_TABLE) - set(WS_ROUTES))
    assert not stale, f"WS_ROLE_TABLE names routes that no longer exist: {stale}"


async def _ws_connects(path: str, user: User | None = None, bearer: str | None = None) -> bool:
    """Whether the full ASGI stack (origin check, auth, consumer) accepts the handshake."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if user is not None and bearer is None:
        client = Client()
        await sync_to_async(client.force_login)(
            user, backend="django.contrib.auth.backends.ModelBackend"
        )
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    if bearer is not None:
        headers.append((b"authorization", f"Bearer {bearer}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    await communicator.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)  # the consumer reads the session from other threads
@pytest.mark.parametrize("key", WS_ROUTES)
async def test_websocket_refuses_strangers_and_admits_by_role(key: str) -> None:
    from asgiref.sync import sync_to_async

    minimum = WS_ROLE_TABLE.get(key)
    assert minimum is not None, f"add {key!r} to WS_ROLE_TABLE in tests/test_tenancy_matrix.py"
    world = await sync_to_async(build_world)()
    path = key.removeprefix("WS ").replace("<slug>", world.workspace_a.slug)
    token_for = sync_to_async(
        lambda workspace, user: api_token_create(workspace=workspace, user=user, name="ws").secret
    )

    assert not await _ws_connects(path), f"anonymous {key}"
    assert not await _ws_connects(path, world.outsider), f"outsider {key}"
    outsider_token = await token_for(world.workspace_b, world.outsider)
    assert not await _ws_connects(path, bearer=outsider_token), f"outsider token {key}"
    assert not await _ws_connects(path, bearer="fdk_not-a-token"), f"bad token {key}"

    minimum_rank = ROLES_ASCENDING.index(Role(minimum))
    for rank, role in enumerate(ROLES_ASCENDING):
        member = world.members[role]
        token = await token_for(world.workspace_a, member)
        for how, connects in (
            ("session", await _ws_connects(path, member)),
            ("token", await _ws_connects(path, bearer=token)),
        ):
            assert connects == (rank >= minimum_rank), f"{role} ({how}) {key}: {connects}"


# --- Keys scoped to named flows ------------------------------------------------------------
FLOW_OBJECT_PARAMS = {"flow_id", "run_id", "other_id", "conversation_id", "number", "embed_id"}
API_ROUTES = [route for route in ROUTES if route.is_api]


@pytest.mark.parametrize("route", API_ROUTES, ids=[route.key for route in API_ROUTES])
def test_a_flow_scoped_key_reaches_no_other_flow(route: Route, world: World) -> None:
    """The owner's key scoped to one flow, on every API route with objects of other flows:
    a route about one flow, run or conversation answers 404; a route declaring
    @for_flow_keys answers (its list filtered: test_api_keys.py checks the content) or 404
    (a model outside the scope); every other route refuses it with 403."""
    rule = rule_for(route)
    owner = world.members[OWNER]
    scope = _flow(world.workspace_a, owner)
    key = api_token_create(
        workspace=world.workspace_a, user=owner, name="scoped", flow_ids=[scope.pk]
    ).secret
    response = _call(route, _path_for(route, world.workspace_a, owner), rule, owner, bearer=key)
    if serves_flow_keys(route):
        expected = rule.ok | {404}
    elif set(route.params) & FLOW_OBJECT_PARAMS:
        expected = frozenset({404})
    else:
        expected = frozenset({403})
    assert response.status_code in expected, f"flow key {route.key}: {_describe(response)}"


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_refuses_a_flow_scoped_key() -> None:
    from asgiref.sync import sync_to_async

    def make() -> tuple[str, str]:
        world = build_world()
        owner = world.members[OWNER]
        flow = _flow(world.workspace_a, owner)
        scoped = api_token_create(
            workspace=world.workspace_a, user=owner, name="scoped", flow_ids=[flow.pk]
        ).secret
        whole = api_token_create(workspace=world.workspace_a, user=owner, name="whole").secret
        return scoped, whole

    scoped, whole = await sync_to_async(make)()
    assert await _ws_connects("/ws/w/acme/exec", bearer=whole)
    assert not await _ws_connects("/ws/w/acme/exec", bearer=scoped)
