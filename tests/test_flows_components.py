"""Each component builds and runs on its own: models against a real local HTTP server
speaking the provider's streaming protocol (tests/fakes/fake_openai.py) or the offline demo
model."""

from __future__ import annotations

import asyncio
import json

import pytest

from accounts.models import Membership, Workspace
from flows import services
from flows.builder import build_plan
from flows.components.base import BuildEnv, NodeError, RunCancelled
from flows.components.registry import get_component
from flows.models import ConversationMessage
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.fakes.runner import RecordingContext, run_component, run_plan

pytestmark = pytest.mark.django_db


def acting(workspace: Workspace) -> Membership:
    return Membership.objects.filter(workspace=workspace).order_by("pk").first()


def make_credential(
    workspace: Workspace, base_url: str, *, provider: str = "openai", key: str = "sk-test-123"
) -> int:
    return services.credential_create(
        workspace=workspace,
        acting=acting(workspace),
        name=f"{provider}-{base_url[-6:]}",
        provider=provider,
        base_url=base_url,
        api_key=key,
    ).pk


def node(workspace: Workspace, key: str, params: dict | None = None):
    """(component, params, built) for one node, through the real validation and build."""
    component = get_component(key)
    validated = component.Params.model_validate(params or {})
    env = BuildEnv(workspace)
    assert component.check(validated, env) == []
    return component, validated, component.build(validated, env)


def execute(
    workspace: Workspace, key: str, params: dict | None, inputs: dict, *, session: str = "s"
):
    component, validated, built = node(workspace, key, params)
    ctx = RecordingContext(workspace.pk, session_id=session)
    return run_component(component, validated, built, inputs, ctx), ctx


# --- io ---------------------------------------------------------------------------------------
def test_chat_input_passes_the_run_value_and_falls_back_to_its_default(workspace_a):
    assert execute(workspace_a, "io.chat_input", {}, {"value": "hi"})[0] == {"text": "hi"}
    assert execute(workspace_a, "io.chat_input", {"default": "dflt"}, {"value": ""})[0] == {
        "text": "dflt"
    }


def test_text_output_renders_any_value_as_text_and_caps_it(workspace_a):
    out, _ = execute(workspace_a, "io.text_output", {"max_chars": 5}, {"text": "abcdefgh"})
    assert out == {"text": "abcde"}
    out, _ = execute(workspace_a, "io.text_output", {}, {"text": {"a": 1}})
    assert json.loads(out["text"]) == {"a": 1}


# --- prompt.template --------------------------------------------------------------------------
def test_prompt_template_variables_become_input_ports_and_are_filled(workspace_a):
    component, params, built = node(
        workspace_a, "prompt.template", {"template": "Q: {question}\nC: {context} {question}"}
    )
    assert [p.name for p in component.input_ports(params)] == ["question", "context"]
    ctx = RecordingContext(workspace_a.pk)
    out = run_component(component, params, built, {"question": "why", "context": "because"}, ctx)
    assert out == {"prompt": "Q: why\nC: because why"}


def test_prompt_template_formats_values_as_plain_strings(workspace_a):
    class Sneaky:
        secret = "do-not-leak"

        def __str__(self) -> str:
            return "plain"

    out, _ = execute(workspace_a, "prompt.template", {"template": "v={v}"}, {"v": Sneaky()})
    assert out == {"prompt": "v=plain"}


def test_prompt_template_rechecks_placeholders_at_format_time(workspace_a):
    """A template that skipped validation (e.g. altered after it) is refused when formatting."""
    component = get_component("prompt.template")
    bad = component.Params.model_construct(template="{x.__class__.__mro__}")
    with pytest.raises(NodeError, match="not allowed"):
        run_component(component, bad, None, {"x": "s"}, RecordingContext(workspace_a.pk))


# --- models -----------------------------------------------------------------------------------
def test_demo_model_streams_word_by_word_at_its_pace(workspace_a):
    """Its pace is checked by order, not by a clock: a metronome task on the same loop
    sleeps half the model's delay at a time. asyncio fires timers in deadline order, and the
    metronome's next deadline is always earlier than the model's next token when the model
    really sleeps `delay_ms` between words, so at least one tick falls between every two
    tokens however slow the machine. A model that ignored `delay_ms` (or slept far less)
    would emit its words back to back, with no tick between them."""
    component, params, built = node(
        workspace_a, "llm.demo", {"reply": "one two three four five", "delay_ms": 30}
    )
    ctx = RecordingContext(workspace_a.pk)
    order: list[str] = []
    ctx.on_event(lambda event, data: order.append("token") if event == "on_token" else None)

    async def metronome() -> None:
        while True:
            await asyncio.sleep(0.015)
            order.append("tick")

    async def scenario() -> dict:
        ticking = asyncio.ensure_future(metronome())
        await asyncio.sleep(0)  # the metronome's first deadline is set before the model's
        try:
            return await component.execute(built, params, {"prompt": "x"}, ctx)
        finally:
            ticking.cancel()

    out = asyncio.run(scenario())
    assert out == {"text": "one two three four five"}
    assert ctx.of("on_token") == ["one", " two", " three", " four", " five"]
    tokens = [i for i, what in enumerate(order) if what == "token"]
    assert len(tokens) == 5
    between = [order[a + 1 : b].count("tick") for a, b in zip(tokens, tokens[1:], strict=False)]
    assert all(n >= 1 for n in between), order  # a pause between every two words
    assert ctx.delivered == 1  # the first token is handed over to be sent, once


def test_demo_model_derives_a_deterministic_reply_from_the_prompt(workspace_a):
    first, _ = execute(
        workspace_a, "llm.demo", {"delay_ms": 0}, {"prompt": "Context:\nThe sky is blue.\n\nQ?"}
    )
    second, _ = execute(
        workspace_a, "llm.demo", {"delay_ms": 0}, {"prompt": "Context:\nThe sky is blue.\n\nQ?"}
    )
    assert first == second
    assert "The sky is blue." in first["text"]


def test_demo_model_stops_between_chunks_when_the_run_is_cancelled(workspace_a):
    component, params, built = node(
        workspace_a, "llm.demo", {"reply": "a b c d e f", "delay_ms": 1}
    )
    ctx = RecordingContext(workspace_a.pk)
    ctx.cancel()
    with pytest.raises(RunCancelled):
        run_component(component, params, built, {"prompt": "x"}, ctx)
    assert len(ctx.of("on_token")) == 0


def test_openai_chat_streams_tokens_from_an_openai_compatible_server(workspace_a):
    tokens = [" alpha", " beta", " gamma"]
    with FakeOpenAIServer(tokens=tokens, delay=0.005) as server:
        cred = make_credential(workspace_a, server.base_url, key="sk-live-abc")
        out, ctx = execute(
            workspace_a,
            "llm.openai_chat",
            {
                "credential": cred,
                "model": "gpt-test",
                "temperature": 0.2,
                "system_prompt": "Be brief.",
            },
            {"prompt": "Hello?"},
        )
    assert out == {"text": " alpha beta gamma"}
    assert ctx.of("on_token") == tokens
    body = server.requests[0]
    assert body["stream"] is True and body["model"] == "gpt-test"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello?"},
    ]
    assert server.headers[0].get("authorization") == "Bearer sk-live-abc"


def test_openai_chat_failure_is_a_clear_error_without_the_key(workspace_a):
    with FakeOpenAIServer(fail_status=401) as server:
        cred = make_credential(workspace_a, server.base_url, key="sk-very-secret-999")
        with pytest.raises(NodeError) as info:
            execute(workspace_a, "llm.openai_chat", {"credential": cred}, {"prompt": "x"})
    assert "401" in str(info.value)
    assert "sk-very-secret" not in str(info.value)


def test_anthropic_chat_streams_from_a_messages_api_server(workspace_a):
    with FakeOpenAIServer(reply="Bonjour le monde") as server:
        cred = make_credential(workspace_a, server.root_url, provider="anthropic")
        out, ctx = execute(
            workspace_a,
            "llm.anthropic",
            {"credential": cred, "model": "claude-test"},
            {"prompt": "hi"},
        )
    assert out == {"text": "Bonjour le monde"}
    assert ctx.of("on_token") == ["Bonjour", " le", " monde"]
    assert server.paths[0].endswith("/v1/messages")


def test_ollama_chat_streams_from_an_ollama_server(workspace_a):
    with FakeOpenAIServer(reply="Hallo Welt") as server:
        cred = make_credential(workspace_a, server.root_url, provider="ollama")
        out, ctx = execute(
            workspace_a, "llm.ollama", {"credential": cred, "model": "llama3"}, {"prompt": "hi"}
        )
    assert out == {"text": "Hallo Welt"}
    assert ctx.of("on_token") == ["Hallo", " Welt"]
    assert server.paths[0] == "/api/chat"


def test_model_node_refuses_a_credential_of_another_provider(workspace_a):
    cred = make_credential(workspace_a, "http://127.0.0.1:1/v1", provider="ollama")
    component = get_component("llm.openai_chat")
    params = component.Params.model_validate({"credential": cred})
    problems = component.check(params, BuildEnv(workspace_a))
    assert [p.code for p in problems] == ["credential_provider"]


# --- parsers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "expected"), [("full", "a\n\nb"), ("first_line", "a"), ("last_line", "b")]
)
def test_text_parser_modes(workspace_a, mode, expected):
    out, _ = execute(workspace_a, "parser.text", {"mode": mode}, {"input": "  a\n\nb  "})
    assert out == {"text": expected}


def test_json_parser_reads_fenced_json_and_picks_a_key(workspace_a):
    text = 'Sure:\n```json\n{"intent": "billing", "score": 0.9}\n```'
    assert execute(workspace_a, "parser.json", {}, {"text": text})[0] == {
        "json": {"intent": "billing", "score": 0.9}
    }
    assert execute(workspace_a, "parser.json", {"key": "intent"}, {"text": text})[0] == {
        "json": "billing"
    }


@pytest.mark.parametrize("text", ["not json", "[" * 10_000, '{"a": 1'])
def test_json_parser_refuses_bad_json_with_a_clear_error(workspace_a, text):
    with pytest.raises(NodeError, match="JSON"):
        execute(workspace_a, "parser.json", {}, {"text": text})


# --- memory -----------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_conversation_memory_persists_per_workspace_and_session(workspace_a, workspace_b):
    params = {"conversation": "support", "max_messages": 10}
    out, _ = execute(workspace_a, "memory.conversation", params, {"message": "hi"}, session="s1")
    assert out == {"history": "", "message": "hi"}
    execute(
        workspace_a,
        "memory.conversation",
        {**params, "role": "assistant"},
        {"message": "hello!"},
        session="s1",
    )
    out, _ = execute(workspace_a, "memory.conversation", params, {"message": "again"}, session="s1")
    assert out["history"] == "User: hi\nAssistant: hello!"
    # another session and another workspace start empty
    assert (
        execute(workspace_a, "memory.conversation", params, {"message": "x"}, session="s2")[0][
            "history"
        ]
        == ""
    )
    assert (
        execute(workspace_b, "memory.conversation", params, {"message": "x"}, session="s1")[0][
            "history"
        ]
        == ""
    )
    assert ConversationMessage.objects.filter(workspace=workspace_a, session_id="s1").count() == 3


# --- documents and retrieval ------------------------------------------------------------------
def add_docs(workspace: Workspace, docs: list[tuple[str, str]], collection: str = "kb") -> None:
    for title, content in docs:
        services.document_create(
            workspace=workspace,
            acting=acting(workspace),
            title=title,
            content=content,
            collection=collection,
        )


@pytest.mark.django_db(transaction=True)
def test_docs_corpus_and_bm25_rank_the_relevant_document_first(workspace_a, workspace_b):
    add_docs(
        workspace_a,
        [
            ("Passwords", "Reset your password from the login page using the emailed link."),
            ("Billing", "Invoices are emailed monthly; update the billing address in settings."),
            ("Export", "Owners export workspace data as JSON."),
        ],
    )
    add_docs(workspace_b, [("Secret", "password password password of bravo")])
    corpus, _ = execute(workspace_a, "docs.corpus", {"collection": "kb"}, {})
    assert [d.metadata["title"] for d in corpus["documents"]] == ["Passwords", "Billing", "Export"]
    # its event form is a summary, not every document's text
    assert corpus["documents"].model_dump() == {
        "count": 3,
        "titles": ["Passwords", "Billing", "Export"],
    }
    out, ctx = execute(
        workspace_a,
        "retriever.bm25",
        {"k": 2},
        {"documents": corpus["documents"], "query": "how to reset my password"},
    )
    assert [d.metadata["title"] for d in out["documents"]] == ["Passwords"]
    assert out["context"].startswith("Passwords: Reset your password")
    retrieval = ctx.of("on_retrieval")[0]
    assert retrieval["hits"][0]["title"] == "Passwords"
    assert "bravo" not in json.dumps(retrieval)


# --- tools and the agent ----------------------------------------------------------------------
def test_calculator_node_computes_directly_and_outputs_a_tool(workspace_a):
    out, ctx = execute(workspace_a, "tool.calculator", {}, {"expression": "(2 + 3) * 4 - 2 ** 3"})
    assert out["result"] == "12"
    assert str(out["tool"]) == "tool:calculator"
    assert ctx.of("on_tool_call")[0]["tool_input"] == {"expression": "(2 + 3) * 4 - 2 ** 3"}


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('id')",
        "().__class__.__bases__[0].__subclasses__()",
        "9 ** 9 ** 9",
        "2 ** 100000",
        "10 ** 400 * 10 ** 400 * 10 ** 400 * 10 ** 400 * 10 ** 400 * 10 ** 400",
        "open('/etc/passwd')",
        "'a' * 10",
        "[x for x in range(10)]",
        "lambda: 1",
        "1 / 0",
        "(" * 300 + "1" + ")" * 300,
    ],
)
def test_calculator_refuses_everything_but_bounded_arithmetic(workspace_a, expression):
    with pytest.raises(NodeError, match="Calculator"):
        execute(workspace_a, "tool.calculator", {}, {"expression": expression})


def test_calculator_tool_without_input_only_offers_the_tool(workspace_a):
    out, ctx = execute(workspace_a, "tool.calculator", {}, {})
    assert set(out) == {"tool"} and ctx.events == []


def test_agent_calls_the_calculator_and_answers_with_its_result(workspace_a):
    script = FakeOpenAIServer(
        reply="The answer is 42.",
        tool_calls=[{"name": "calculator", "arguments": {"expression": "6 * 7"}}],
    )
    with script as server:
        cred = make_credential(workspace_a, server.base_url)
        calculator, _ = execute(workspace_a, "tool.calculator", {}, {})
        out, ctx = execute(
            workspace_a,
            "agent.tools",
            {"credential": cred, "model": "gpt-test"},
            {"input": "What is six times seven?", "tools": [calculator["tool"]]},
        )
    assert out == {"text": "The answer is 42."}
    call = ctx.of("on_tool_call")[0]
    assert call["tool_name"] == "calculator" and call["tool_input"] == {"expression": "6 * 7"}
    assert ctx.of("on_tool_result")[0]["output"] == "42"
    assert ctx.tokens == "The answer is 42."
    first, second = server.requests
    assert first["tools"][0]["function"]["name"] == "calculator"
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "42"


@pytest.mark.django_db(transaction=True)
def test_agent_searches_documents_with_doc_search(workspace_a):
    add_docs(workspace_a, [("Refunds", "Refunds are issued within 5 business days.")])
    with FakeOpenAIServer(
        reply="Within 5 business days.",
        tool_calls=[{"name": "doc_search", "arguments": {"query": "refund"}}],
    ) as server:
        cred = make_credential(workspace_a, server.base_url)
        search, _ = execute(workspace_a, "tool.doc_search", {"collection": "kb"}, {})
        out, ctx = execute(
            workspace_a,
            "agent.tools",
            {"credential": cred},
            {"input": "refunds?", "tools": [search["tool"]]},
        )
    assert out == {"text": "Within 5 business days."}
    assert "Refunds are issued within 5 business days." in ctx.of("on_tool_result")[0]["output"]


def test_agent_gives_up_after_max_iterations(workspace_a):
    with FakeOpenAIServer(
        tool_calls=[{"name": "calculator", "arguments": {"expression": "1+1"}}]
    ) as server:
        # every answer asks for the tool again (the last message is never a tool result
        # from the server's point of view once it is answered... so script a loop)
        server.tool_calls = server.tool_calls  # always the same call
        server._tool_calls_for = lambda body: server.tool_calls  # type: ignore[method-assign]  # the test scripts the fake's answer
        cred = make_credential(workspace_a, server.base_url)
        calculator, _ = execute(workspace_a, "tool.calculator", {}, {})
        with pytest.raises(NodeError, match="2 steps"):
            execute(
                workspace_a,
                "agent.tools",
                {"credential": cred, "max_iterations": 2},
                {"input": "loop", "tools": [calculator["tool"]]},
            )
    assert len(server.requests) == 2


# --- logic.router -----------------------------------------------------------------------------
ROUTER = {
    "rules": [
        {"output": "billing", "match": "keyword", "pattern": "invoice, refund"},
        {"output": "bug", "match": "regex", "pattern": r"\berror\s+\d{3}\b"},
    ],
    "default_output": "other",
}


@pytest.mark.parametrize(
    ("text", "port"),
    [("Where is my INVOICE?", "billing"), ("I get error 500", "bug"), ("hello", "other")],
)
def test_router_sends_the_input_to_exactly_one_output(workspace_a, text, port):
    component, params, _ = node(workspace_a, "logic.router", ROUTER)
    assert [p.name for p in component.output_ports(params)] == ["billing", "bug", "other"]
    out, _ = execute(workspace_a, "logic.router", ROUTER, {"input": text})
    assert out == {port: text}


ZH_ROUTER = {
    "rules": [
        {"output": "orders", "match": "keyword", "pattern": "订单, order"},
        {"output": "refunds", "match": "keyword", "pattern": "退款"},
        {"output": "han", "match": "regex", "pattern": r"^\p{Han}+$"},
    ],
    "default_output": "other",
}


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("我想查询订单状态，请问怎么办", "orders"),  # no spaces around a Chinese keyword
        ("申请退款", "refunds"),
        ("Track my ORDER please", "orders"),
        ("reorder the list", "other"),  # an English keyword is still a whole word
        ("你好", "han"),
        ("hello", "other"),
    ],
)
def test_router_keywords_match_chinese_inside_a_sentence_and_english_as_words(
    workspace_a, text, port
):
    out, _ = execute(workspace_a, "logic.router", ZH_ROUTER, {"input": text})
    assert out == {port: text}


def test_router_branch_not_taken_skips_its_nodes(workspace_a):
    graph = {
        "nodes": [
            {"id": "in", "component": "io.chat_input"},
            {"id": "r", "component": "logic.router", "params": ROUTER},
            {"id": "billing_out", "component": "io.text_output"},
            {"id": "other_out", "component": "io.text_output"},
        ],
        "edges": [
            {"source": "in", "source_port": "text", "target": "r", "target_port": "input"},
            {
                "source": "r",
                "source_port": "billing",
                "target": "billing_out",
                "target_port": "text",
            },
            {"source": "r", "source_port": "other", "target": "other_out", "target_port": "text"},
        ],
    }
    plan = build_plan(graph, workspace_a)
    results, _ = run_plan(plan, {"in": "refund please"}, workspace_id=workspace_a.pk)
    assert results["billing_out"] == {"text": "refund please"}
    assert results["other_out"] is None


def test_components_never_block_the_event_loop_while_streaming(workspace_a):
    """Demo models on one loop overlap (they stream with asyncio.sleep, not time.sleep).

    The order of their tokens cannot show it: `fairly` hands the loop over between chunks,
    so even models that blocked the loop in their waits would take turns word by word.
    What blocking changes is that the waits add up instead of overlapping. So the baseline
    is measured in the same test: one model streaming alone, then five side by side. Both
    phases are bounded below by the same sleeps (nine 40 ms gaps) and a loaded machine
    slows both alike; five models that overlap take about as long as one, five that
    block take five times as long, and the check sits at 2.5 times."""
    models = [
        node(workspace_a, "llm.demo", {"reply": " ".join([name] * 10), "delay_ms": 40})
        for name in "abcde"
    ]
    order: list[str] = []

    def context(name: str) -> RecordingContext:
        ctx = RecordingContext(workspace_a.pk)
        ctx.on_event(lambda event, data: order.append(name) if event == "on_token" else None)
        return ctx

    async def stream(picked: list) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(
            *(
                c.execute(built, p, {"prompt": "x"}, context(c_name))
                for c_name, (c, p, built) in picked
            )
        )
        return loop.time() - started

    alone = asyncio.run(stream([("a", models[0])]))
    order.clear()
    together = asyncio.run(stream(list(zip("abcde", models, strict=True))))
    assert all(order.count(name) == 10 for name in "abcde"), order
    # Each model emitted words while the others were still streaming: they overlapped...
    last_first = max(order.index(name) for name in "abcde")
    first_last = min(len(order) - 1 - order[::-1].index(name) for name in "abcde")
    assert last_first < first_last, order
    # ...and so did their waits: five took about as long as one, not five times as long.
    assert together < 2.5 * alone, (together, alone)
