"""The hostile-payload corpus: every payload is refused with a clear, structured problem,
and a sentinel proves that nothing it names was imported, deserialised or executed.

The sentinel (tests/fakes/sentinel.py): `tests.fakes.sentinel_target` flips a flag when it is
imported or its `fire()` runs; while a payload is validated and built, `__import__`,
`importlib.import_module`, `pickle.load(s)` and LangChain's `load()/loads()` are wrapped to
trip on anything a payload could have smuggled in.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from accounts.models import Membership, Workspace
from flows import services
from flows.builder import GraphInvalid, build_plan, validate_graph
from flows.models import ComponentPolicy, WorkspaceComponentPolicy
from tests.fakes import sentinel
from tests.fakes.runner import run_plan

pytestmark = pytest.mark.django_db

TARGET = "tests.fakes.sentinel_target"
PICKLE_B64 = base64.b64encode(sentinel.pickle_bomb_bytes()).decode()
LC_SECRET = {"lc": 1, "type": "secret", "id": ["FLOWDECK_SENTINEL_SECRET"]}
LC_CONSTRUCTOR = {
    "lc": 1,
    "type": "constructor",
    "id": ["tests", "fakes", "sentinel_target", "Boom"],
    "kwargs": {},
}


@dataclass
class Env:
    workspace: Workspace
    foreign_credential: int


def node(node_id: str, component: Any, params: Any = None, **extra: Any) -> dict:
    data = {"id": node_id, "component": component, "params": params or {}}
    data.update(extra)
    return data


def edge(source: str, source_port: str, target: str, target_port: str) -> dict:
    return {
        "source": source,
        "source_port": source_port,
        "target": target,
        "target_port": target_port,
    }


def one(n: dict) -> Callable[[Env], dict]:
    return lambda env: {"nodes": [n], "edges": []}


def template(text: str) -> Callable[[Env], dict]:
    return one(node("p", "prompt.template", {"template": text}))


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def cycle(env: Env) -> dict:
    return {
        "nodes": [
            node("a", "prompt.template", {"template": "{x}"}),
            node("b", "prompt.template", {"template": "{x}"}),
        ],
        "edges": [edge("a", "prompt", "b", "x"), edge("b", "prompt", "a", "x")],
    }


def self_loop(env: Env) -> dict:
    return {
        "nodes": [node("a", "prompt.template", {"template": "{x}"})],
        "edges": [edge("a", "prompt", "a", "x")],
    }


def platform_disabled(env: Env) -> dict:
    ComponentPolicy.objects.create(key="llm.demo", enabled=False)
    return {"nodes": [node("m", "llm.demo")], "edges": []}


def workspace_disabled(env: Env) -> dict:
    WorkspaceComponentPolicy.objects.create(
        workspace=env.workspace, key="prompt.template", enabled=False
    )
    return template("{x}")(env)


def foreign_credential(env: Env) -> dict:
    return {
        "nodes": [node("m", "llm.openai_chat", {"credential": env.foreign_credential})],
        "edges": [],
    }


def two_into_one(env: Env) -> dict:
    return {
        "nodes": [
            node("a", "io.chat_input"),
            node("b", "io.chat_input"),
            node("o", "io.text_output"),
        ],
        "edges": [edge("a", "text", "o", "text"), edge("b", "text", "o", "text")],
    }


def type_mismatch(env: Env) -> dict:
    return {
        "nodes": [
            node("docs", "docs.corpus"),
            node("calc", "tool.calculator"),
            node("r", "logic.router"),
            node("t", "retriever.bm25"),
        ],
        "edges": [
            edge("calc", "tool", "t", "documents"),
            edge("docs", "documents", "t", "query"),
            edge("docs", "documents", "r", "input"),
        ],
    }


def unknown_port(env: Env) -> dict:
    return {
        "nodes": [node("a", "io.chat_input"), node("o", "io.text_output")],
        "edges": [edge("a", "__class__", "o", "text")],
    }


def unknown_node(env: Env) -> dict:
    return {
        "nodes": [node("a", "io.chat_input")],
        "edges": [edge("a", "text", "os.system", "text")],
    }


def many_nodes(env: Env) -> dict:
    return {"nodes": [node(f"n{i}", "io.chat_input") for i in range(501)], "edges": []}


# (case id, graph factory, expected problem code)
CASES: list[tuple[str, Callable[[Env], Any], str]] = [
    # import paths and class names as component keys
    ("key-os-system", one(node("x", "os.system")), "unknown_component"),
    ("key-subprocess", one(node("x", "subprocess.Popen")), "unknown_component"),
    ("key-sentinel-class", one(node("x", f"{TARGET}.Boom")), "unknown_component"),
    ("key-builtins-eval", one(node("x", "builtins.eval")), "unknown_component"),
    (
        "key-dotted-class",
        one(node("x", "langchain_core.prompts.PromptTemplate")),
        "unknown_component",
    ),
    ("key-dunder-import", one(node("x", "__import__")), "unknown_component"),
    ("key-attribute-of-registered", one(node("x", "llm.demo.__class__")), "unknown_component"),
    ("key-trailing-space", one(node("x", "llm.demo ")), "unknown_component"),
    ("key-cyrillic-lookalike", one(node("x", "llm.d\u0435mo")), "unknown_component"),
    ("key-fullwidth-lookalike", one(node("x", "\uff4c\uff4c\uff4d.demo")), "unknown_component"),
    ("key-zero-width-joiner", one(node("x", "llm.\u200ddemo")), "unknown_component"),
    ("key-uppercase", one(node("x", "LLM.DEMO")), "unknown_component"),
    ("key-lc-constructor", one(node("x", LC_CONSTRUCTOR)), "unknown_component"),
    ("key-list-path", one(node("x", ["langchain", "llms", "OpenAI"])), "unknown_component"),
    ("key-pickle-b64", one(node("x", PICKLE_B64)), "unknown_component"),
    # serialised LangChain objects and dunders in params
    ("params-lc-constructor", one(node("m", "llm.demo", LC_CONSTRUCTOR)), "unknown_param"),
    (
        "params-lc-secret-value",
        one(node("o", "io.text_output", {"max_chars": LC_SECRET})),
        "invalid_param",
    ),
    ("params-dunder-class", one(node("m", "llm.demo", {"__class__": TARGET})), "unknown_param"),
    ("params-dunder-globals", one(node("m", "llm.demo", {"__globals__": {}})), "unknown_param"),
    (
        "params-module-path",
        one(node("m", "llm.demo", {"_type": TARGET, "module": TARGET})),
        "unknown_param",
    ),
    ("params-pickle-field", one(node("m", "llm.demo", {"pickle": PICKLE_B64})), "unknown_param"),
    (
        "params-pickle-as-number",
        one(node("m", "llm.demo", {"delay_ms": PICKLE_B64})),
        "invalid_param",
    ),
    ("params-not-an-object", one(node("m", "llm.demo", "base64:" + PICKLE_B64)), "invalid_param"),
    # templates
    ("tpl-attribute", template("{x.__class__}"), "template_rejected"),
    ("tpl-globals", template("{fn.__globals__[os]}"), "template_rejected"),
    ("tpl-index", template("{x[0]}"), "template_rejected"),
    ("tpl-positional", template("{0}"), "template_rejected"),
    ("tpl-auto-positional", template("hello {}"), "template_rejected"),
    ("tpl-conversion", template("{x!r}"), "template_rejected"),
    ("tpl-nested-format-spec", template("{x:{y.__class__}}"), "template_rejected"),
    (
        "tpl-jinja2-expression",
        template("{{ x.__class__.__init__.__globals__ }}"),
        "template_rejected",
    ),
    (
        "tpl-jinja2-statement",
        template("{% for c in ().__class__.__base__.__subclasses__() %}{% endfor %}"),
        "template_rejected",
    ),
    ("tpl-mustache-section", template("{{#items}}{{name}}{{/items}}"), "template_rejected"),
    (
        "tpl-format-choice",
        one(node("p", "prompt.template", {"template": "{x}", "template_format": "jinja2"})),
        "unknown_param",
    ),
    ("tpl-too-long", template("{x}" + "a" * 20_001), "invalid_param"),
    # size and shape
    ("graph-not-object", lambda env: ["nodes"], "invalid_graph"),
    ("graph-nodes-not-list", lambda env: {"nodes": {"a": 1}, "edges": []}, "invalid_graph"),
    ("graph-too-many-nodes", many_nodes, "too_many_nodes"),
    (
        "graph-over-1-mib",
        one(node("m", "llm.demo", {"reply": "x" * (1024 * 1024 + 10)})),
        "too_large",
    ),
    ("graph-deep-params", one(node("m", "llm.demo", nested(5_000))), "too_deep"),
    ("graph-deep-position", one(node("m", "llm.demo", {}, position=nested(100))), "too_deep"),
    (
        "graph-python-object",
        one(node("m", "llm.demo", {"reply": sentinel.PickleBomb()})),
        "not_json",
    ),
    (
        "node-extra-code-field",
        one(node("m", "llm.demo", {}, code="import os; os.system('id')")),
        "unknown_field",
    ),
    ("node-id-path", one(node("../../etc/passwd", "llm.demo")), "invalid_node_id"),
    (
        "node-id-duplicate",
        lambda env: {
            "nodes": [node("a", "io.chat_input"), node("a", "io.chat_input")],
            "edges": [],
        },
        "duplicate_node_id",
    ),
    (
        "node-position-object",
        one(node("m", "llm.demo", {}, position=LC_SECRET)),
        "invalid_position",
    ),
    # graph structure
    ("cycle-two-nodes", cycle, "cycle"),
    ("cycle-self-loop", self_loop, "cycle"),
    ("edge-unknown-port", unknown_port, "unknown_port"),
    ("edge-unknown-node", unknown_node, "unknown_node"),
    ("edge-two-into-one", two_into_one, "multiple_inputs"),
    ("edge-type-mismatch", type_mismatch, "type_mismatch"),
    # whitelist and tenancy
    ("disabled-by-platform", platform_disabled, "component_disabled"),
    ("disabled-by-workspace", workspace_disabled, "component_disabled"),
    ("credential-of-another-workspace", foreign_credential, "credential_not_found"),
    (
        "credential-as-string",
        one(node("m", "llm.openai_chat", {"credential": "1"})),
        "invalid_param",
    ),
    (
        "credential-as-bool",
        one(node("m", "llm.openai_chat", {"credential": True})),
        "invalid_param",
    ),
    # Regex rules run on RE2 (linear time, tests/test_run_loop_stalls.py): what RE2 cannot
    # match in linear time is refused with its reason.
    (
        "router-backreference",
        one(
            node(
                "r",
                "logic.router",
                {"rules": [{"output": "x", "match": "regex", "pattern": r"(a)\1"}]},
            )
        ),
        "invalid_regex",
    ),
    (
        "router-lookbehind",
        one(
            node(
                "r",
                "logic.router",
                {"rules": [{"output": "x", "match": "regex", "pattern": r"(?<!a)b"}]},
            )
        ),
        "invalid_regex",
    ),
    (
        "router-huge-automaton",
        one(
            node(
                "r",
                "logic.router",
                {
                    "rules": [
                        {
                            "output": "x",
                            "match": "regex",
                            "pattern": "((((a{100}){100}){100}){100})",
                        }
                    ]
                },
            )
        ),
        "invalid_regex",
    ),
    (
        "http-get-unknown-param",
        one(node("h", "tool.http_get", {"allow_private": True})),
        "unknown_param",
    ),
]


@pytest.fixture
def env(workspace_a: Workspace, workspace_b: Workspace, mallory_owner) -> Env:
    acting = Membership.objects.get(workspace=workspace_b, user=mallory_owner)
    foreign = services.credential_create(
        workspace=workspace_b,
        acting=acting,
        name="bravo",
        provider="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-bravo",
    )
    return Env(workspace=workspace_a, foreign_credential=foreign.pk)


def test_the_corpus_has_at_least_40_payloads():
    assert len(CASES) >= 40
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("case_id", "factory", "code"), CASES, ids=[c[0] for c in CASES])
def test_hostile_payload_is_refused_and_nothing_runs(env, case_id, factory, code):
    sentinel.reset()
    graph = factory(env)
    with sentinel.watch():
        problems = validate_graph(graph, env.workspace)
        with pytest.raises(GraphInvalid) as info:
            build_plan(graph, env.workspace)
    sentinel.assert_untouched()
    assert problems, "the payload was accepted"
    assert code in {p.code for p in problems}, [p.as_dict() for p in problems]
    assert [p.as_dict() for p in info.value.problems] == [p.as_dict() for p in problems]
    for problem in problems:
        assert problem.message and len(problem.message) < 500
        json.dumps(problem.as_dict())  # structured and serialisable
        assert "sk-bravo" not in json.dumps(problem.as_dict())


@pytest.mark.parametrize(
    ("case_id", "factory", "code"),
    [
        c
        for c in CASES
        if c[0]
        in {
            "key-sentinel-class",
            "params-lc-constructor",
            "tpl-jinja2-expression",
            "cycle-two-nodes",
            "credential-of-another-workspace",
        }
    ],
)
def test_hostile_payload_through_the_api_is_a_structured_400(
    env, client_for, alice_owner, case_id, factory, code
):
    sentinel.reset()
    client = client_for(alice_owner)
    graph = factory(env)
    response = client.post(
        "/api/w/acme/flows",
        data=json.dumps({"name": "evil", "graph": graph}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert code in {p["code"] for p in response.json()["problems"]}
    validated = client.post(
        "/api/w/acme/flows/validate",
        data=json.dumps({"graph": graph}),
        content_type="application/json",
    )
    assert validated.json()["valid"] is False
    sentinel.assert_untouched()


def test_a_stored_lc_secret_dict_stays_plain_data(workspace_a, monkeypatch):
    """CVE-2025-68664: `{"lc": 1, "type": "secret"}` must never be revived into the env value."""
    monkeypatch.setenv("FLOWDECK_SENTINEL_SECRET", "the-real-secret")
    reply = json.dumps(LC_SECRET)
    graph = {
        "nodes": [
            node("in", "io.chat_input"),
            node("m", "llm.demo", {"reply": reply, "delay_ms": 0}),
            node("o", "io.text_output"),
        ],
        "edges": [edge("in", "text", "m", "prompt"), edge("m", "text", "o", "text")],
    }
    sentinel.reset()
    with sentinel.watch():
        plan = build_plan(graph, workspace_a)
        results, _ = run_plan(plan, {"in": json.dumps(LC_SECRET)}, workspace_id=workspace_a.pk)
    sentinel.assert_untouched()
    assert results["o"]["text"] == reply
    assert "the-real-secret" not in json.dumps(results)


def test_a_pickled_blob_in_text_is_only_ever_text(workspace_a):
    graph = {
        "nodes": [
            node("m", "llm.demo", {"reply": PICKLE_B64, "delay_ms": 0}),
            node("o", "io.text_output"),
        ],
        "edges": [edge("m", "text", "o", "text")],
    }
    # llm.demo needs a prompt: feed it from an input node
    graph["nodes"].insert(0, node("in", "io.chat_input"))
    graph["edges"].append(edge("in", "text", "m", "prompt"))
    sentinel.reset()
    with sentinel.watch():
        results, _ = run_plan(
            build_plan(graph, workspace_a), {"in": PICKLE_B64}, workspace_id=workspace_a.pk
        )
    sentinel.assert_untouched()
    assert results["o"]["text"] == PICKLE_B64


def test_the_sentinel_itself_trips_when_the_target_is_imported():
    """Proves the corpus tests can fail: importing the target is noticed."""
    sentinel.reset()
    with sentinel.watch():
        __import__(TARGET)
    with pytest.raises(AssertionError):
        sentinel.assert_untouched()
    sentinel.reset()


def test_the_sentinel_trips_when_a_pickle_is_loaded():
    sentinel.reset()
    with sentinel.watch(), pytest.raises(AssertionError):
        import pickle

        pickle.loads(base64.b64decode(PICKLE_B64))
    assert sentinel.STATE["tripped"]
    sentinel.reset()


def test_unpickling_the_bomb_really_would_fire():
    """Without the watch the blob does run its payload: so not firing above means something."""
    import pickle

    sentinel.reset()
    assert pickle.loads(base64.b64decode(PICKLE_B64)) == "pwned"  # noqa: S301
    assert sentinel.STATE["fired"] is True
    sentinel.reset()
    os.environ.pop("FLOWDECK_SENTINEL_SECRET", None)
