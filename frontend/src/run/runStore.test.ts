// The run store's fold of protocol events into what the UI shows (per-node status, text,
// output, errors, tool calls, the run's status and outputs), its dedupe by seq, a second
// run and a replay resetting it, and its publishing at most once per frame.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { RunEvent } from "../protocol/execClient";
import { RunStore, applyEvent, emptySnapshot, outputText, type RunSnapshot } from "./runStore";

const RUN = "run-1";

/** Events of one run with consecutive seqs and timestamps 100 ms apart. */
function script(runId = RUN) {
  let seq = 0;
  const at = (n: number) => new Date(Date.UTC(2026, 0, 1, 12, 0, 0, n * 100)).toISOString();
  return (event: string, nodeId: string | null = null, extra: Partial<RunEvent> = {}): RunEvent => {
    seq += 1;
    return { event, run_id: runId, seq, node_id: nodeId, ts: at(seq), ...extra };
  };
}

function fold(events: RunEvent[], queued: string[] = []): RunSnapshot {
  const s = emptySnapshot();
  for (const e of events) applyEvent(s, e, queued);
  return s;
}

/** A whole successful run: input -> model (three tokens) -> output. */
function successfulRun(runId = RUN): RunEvent[] {
  const e = script(runId);
  return [
    e("run_started", null, { data: { flow: 1, version: 1 } }),
    e("node_started", "input", { data: { component: "io.chat_input" } }),
    e("node_finished", "input", { data: "hi", duration_ms: 1 }),
    e("node_started", "model", { data: { component: "llm.demo" } }),
    e("on_token", "model", { data: "Hello" }),
    e("on_token", "model", { data: " there" }),
    e("on_token", "model", { data: "!" }),
    e("node_finished", "model", { data: "Hello there!", duration_ms: 250 }),
    e("node_started", "output", { data: { component: "io.text_output" } }),
    e("node_finished", "output", { data: "Hello there!" }),
    e("completed", null, { status: "success", outputs: { output: "Hello there!" } }),
  ];
}

describe("applyEvent: the fold", () => {
  it("run_started marks the run running and lists the nodes not started yet as queued", () => {
    const e = script();
    const s = fold([e("run_started")], ["input", "model"]);
    expect(s.status).toBe("running");
    expect(s.runId).toBe(RUN);
    expect(s.lastSeq).toBe(1);
    expect(s.startedTs).toBe("2026-01-01T12:00:00.100Z");
    expect(s.nodes).toEqual({
      input: { status: "queued", text: "", shown: 0 },
      model: { status: "queued", text: "", shown: 0 },
    });
    expect(s.order).toEqual([]); // none has started
  });

  it("on_retrieval keeps each retriever's citations in order, older hits ({id, title, score}) too", () => {
    const e = script();
    const s = fold([
      e("run_started"),
      e("on_retrieval", "retrieve", {
        data: {
          query: "订单",
          mode: "hybrid",
          used: "keyword",
          notes: ["Hybrid search ran as keyword search: this knowledge base has no embeddings model."],
          hits: [{ id: 7, title: "订单状态.txt", score: 0.91, document: "订单状态.txt", document_id: 7, page: 2, chunk: 0 }],
        },
      }),
      e("on_retrieval", "bm25", { data: { query: "refund", hits: [{ id: 3, title: "Refunds", score: 1.5 }] } }),
    ]);
    expect(s.retrievals.map((r) => [r.node_id, r.used, r.hits.map((h) => [h.title, h.page ?? null])])).toEqual([
      ["retrieve", "keyword", [["订单状态.txt", 2]]],
      ["bm25", undefined, [["Refunds", null]]],
    ]);
    expect(s.retrievals[0].notes[0]).toContain("keyword");
  });

  it("node_started marks the node running with its component, in the order nodes start", () => {
    const e = script();
    const s = fold([
      e("run_started"),
      e("node_started", "b", { data: { component: "llm.demo" } }),
      e("node_started", "a", { data: { component: "io.chat_input" } }),
    ]);
    expect(s.nodes.b).toMatchObject({ status: "running", component: "llm.demo" });
    expect(s.nodes.b.startedAt).toBe(Date.parse("2026-01-01T12:00:00.200Z"));
    expect(s.nodes.a).toMatchObject({ status: "running", component: "io.chat_input" });
    expect(s.order).toEqual(["b", "a"]);
  });

  it("on_token appends each chunk to its node's text, node by node", () => {
    const e = script();
    const s = fold([
      e("run_started"),
      e("node_started", "left"),
      e("on_token", "left", { data: "Hel" }),
      e("on_token", "right", { data: "Wor" }), // a token before its node_started
      e("on_token", "left", { data: "lo" }),
      e("on_token", "right", { data: "ld" }),
      e("on_token", "left", { data: { text: " again" } }), // structured chunk: its text
    ]);
    expect(s.nodes.left.text).toBe("Hello again");
    expect(s.nodes.right.text).toBe("World");
    expect(s.nodes.right.status).toBe("running"); // a streaming node is running
    expect(s.nodes.left.shown).toBe(0); // the typewriter reveals it, not the fold
    expect(s.order).toEqual(["left", "right"]);
  });

  it("node_finished records the output and the logged duration", () => {
    const s = fold(successfulRun());
    expect(s.nodes.model).toMatchObject({
      status: "done",
      output: "Hello there!",
      durationMs: 250,
      text: "Hello there!",
    });
    // Without duration_ms the duration comes from the timestamps (started 100 ms before).
    expect(s.nodes.output.durationMs).toBe(100);
    expect(s.order).toEqual(["input", "model", "output"]);
  });

  it("node_finished with skipped marks the node skipped, not done", () => {
    const e = script();
    const s = fold([
      e("run_started"),
      e("node_finished", "billing_out", { data: null, skipped: true }),
      e("node_finished", "other_out", { data: "x", skipped: false }),
    ]);
    expect(s.nodes.billing_out.status).toBe("skipped");
    expect(s.nodes.other_out.status).toBe("done");
  });

  it("an error on a node marks that node and keeps the message", () => {
    const e = script();
    const s = fold([
      e("run_started"),
      e("node_started", "model"),
      e("on_token", "model", { data: "partial" }),
      e("error", "model", { message: "The provider answered 500." }),
    ]);
    expect(s.nodes.model).toMatchObject({
      status: "error",
      error: "The provider answered 500.",
      text: "partial",
      durationMs: 200,
    });
    expect(s.errors).toEqual([{ node_id: "model", message: "The provider answered 500.", seq: 4 }]);
    expect(s.status).toBe("running"); // the run ends with `completed`, not with the error
  });

  it("a budget that ran out stops its node like an error", () => {
    const e = script();
    const s = fold([
      e("run_started"),
      e("node_started", "model"),
      e("on_token", "model", { data: "partial" }),
      e("budget_exceeded", "model", { message: "The workspace's budget ran out during this call." }),
      e("completed", null, { status: "error" }),
    ]);
    expect(s.nodes.model).toMatchObject({
      status: "error",
      error: "The workspace's budget ran out during this call.",
      text: "partial",
    });
    expect(s.errors).toHaveLength(1);
    expect(s.status).toBe("error");
  });

  it("an error of the run (no node) is listed without inventing a node", () => {
    const e = script();
    const s = fold([
      e("run_started"),
      e("error", null, { data: { message: "The worker stopped responding." } }),
      e("completed", null, { status: "error" }),
    ]);
    expect(s.errors).toEqual([
      { node_id: null, message: "The worker stopped responding.", seq: 2 },
    ]);
    expect(s.nodes).toEqual({});
    expect(s.order).toEqual([]);
    expect(s.status).toBe("error");
  });

  it.each([
    ["success", "success"],
    ["error", "error"],
    ["cancelled", "cancelled"],
    ["something new", "error"], // an unknown final status is not shown as a success
  ])("completed with status %s ends the run as %s", (status, shown) => {
    const e = script();
    const s = fold([e("run_started"), e("completed", null, { status })]);
    expect(s.status).toBe(shown);
    expect(s.finishedTs).toBe("2026-01-01T12:00:00.200Z");
  });

  it("completed carries the run's outputs, at the top level or in data", () => {
    expect(fold(successfulRun()).outputs).toEqual({ output: "Hello there!" });
    const e = script();
    const s = fold([
      e("run_started"),
      e("completed", null, { status: "success", data: { outputs: { out: 42 } } }),
    ]);
    expect(s.outputs).toEqual({ out: 42 });
  });

  it("tool calls are listed in order and each result is attached to its call", () => {
    const e = script();
    const s = fold([
      e("run_started"),
      e("node_started", "agent"),
      e("on_tool_call", "agent", {
        data: { tool_name: "calculator", tool_input: { expression: "1+1" }, call_id: "c1" },
      }),
      e("on_tool_call", "agent", {
        data: { tool_name: "http_get", tool_input: { url: "https://x" }, call_id: "c2" },
      }),
      e("on_tool_result", "agent", { data: { call_id: "c1", tool_name: "calculator", output: "2" } }),
      e("on_tool_result", "agent", { data: { call_id: "c9", tool_name: "lookup", output: "?" } }),
    ]);
    expect(s.toolCalls).toEqual([
      { call_id: "c1", node_id: "agent", tool_name: "calculator", tool_input: { expression: "1+1" }, output: "2", seq: 3 },
      { call_id: "c2", node_id: "agent", tool_name: "http_get", tool_input: { url: "https://x" }, seq: 4 },
      // A result whose call was never seen (resumed after it) still shows.
      { call_id: "c9", node_id: "agent", tool_name: "lookup", tool_input: undefined, output: "?", seq: 6 },
    ]);
  });

  it("retrievals change only the citations, unknown events nothing but the last seq", () => {
    const e = script();
    const before = fold([e("run_started"), e("node_started", "retriever")]);
    const after = structuredClone(before);
    applyEvent(after, e("on_retrieval", "retriever", { data: { query: "q", hits: [{ title: "d1" }] } }));
    applyEvent(after, e("from_the_future", "retriever", { data: 1 }));
    expect(after).toEqual({
      ...before,
      lastSeq: 4,
      retrievals: [
        { node_id: "retriever", query: "q", mode: undefined, used: undefined, notes: [], hits: [{ title: "d1", score: 0 }], seq: 3 },
      ],
    });
  });

  it("outputText shows strings as they are, a text field of an object, else JSON", () => {
    expect(outputText("plain")).toBe("plain");
    expect(outputText({ content: "from a message" })).toBe("from a message");
    expect(outputText({ a: 1 })).toBe('{\n  "a": 1\n}');
    expect(outputText(null)).toBe("");
  });
});

describe("RunStore", () => {
  beforeEach(() => {
    vi.useFakeTimers(); // no requestAnimationFrame here: frames are 16 ms timers
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  /** Let the typewriter run until it has nothing left to reveal. */
  function settle(store: RunStore): RunSnapshot {
    for (let i = 0; i < 1000 && (store.getSnapshot().typing || i === 0); i++) {
      vi.advanceTimersByTime(16);
    }
    return store.getSnapshot();
  }

  it("drops a duplicate or an older seq, so a replayed frame is folded once", () => {
    const store = new RunStore();
    store.reset(RUN, "running", ["model"]);
    const [started, nodeStarted, , , , token] = successfulRun();
    store.apply(started);
    store.apply(nodeStarted);
    store.apply({ ...token, seq: 3, node_id: "model", data: "a" });
    store.apply({ ...token, seq: 3, node_id: "model", data: "a" }); // duplicate
    store.apply({ ...token, seq: 2, node_id: "model", data: "old" }); // out of order
    store.apply({ ...token, seq: 4, node_id: "model", data: "b" });
    const s = settle(store);
    expect(s.nodes.model.text).toBe("ab");
    expect(s.lastSeq).toBe(4);
  });

  it("ignores events of another run", () => {
    const store = new RunStore();
    store.reset(RUN, "running", []);
    for (const event of successfulRun("someone-elses-run")) store.apply(event);
    const s = settle(store);
    expect(s.status).toBe("running");
    expect(s.nodes).toEqual({});
    expect(s.lastSeq).toBe(0);
  });

  it("a second run starts from a clean slate, and late events of the first are ignored", () => {
    const store = new RunStore();
    store.reset(RUN, "running", ["input", "model", "output"]);
    const first = script(RUN);
    store.apply(first("run_started"));
    store.apply(first("node_started", "model"));
    store.apply(first("on_token", "model", { data: "first run text" }));
    store.apply(first("error", "model", { message: "boom" }));
    store.apply(first("on_tool_call", "model", { data: { tool_name: "t", call_id: "c" } }));
    expect(settle(store).nodes.model.text).toBe("first run text");

    store.reset("run-2", "running", ["input", "model", "output"]);
    const cleared = settle(store);
    expect(cleared.runId).toBe("run-2");
    expect(cleared.lastSeq).toBe(0);
    expect(cleared.errors).toEqual([]);
    expect(cleared.toolCalls).toEqual([]);
    expect(cleared.nodes.model).toEqual({ status: "queued", text: "", shown: 0 });

    store.apply(first("on_token", "model", { data: " late" })); // the first run's, seq 6
    const second = script("run-2");
    store.apply(second("run_started"));
    store.apply(second("on_token", "model", { data: "second" }));
    const s = settle(store);
    expect(s.nodes.model.text).toBe("second");
    expect(s.lastSeq).toBe(2);
  });

  it("a replay of a finished run folds its logged events again from seq 1", () => {
    const store = new RunStore();
    store.reset(RUN, "running", ["input", "model", "output"]);
    for (const event of successfulRun()) store.apply(event);
    const live = settle(store);
    expect(live.status).toBe("success");

    // As the run view replays it: reset for the same run, then the frames of the replay
    // (each carries the replay's id besides the logged event).
    store.reset(RUN, "running", ["input", "model", "output"]);
    const midway = successfulRun().slice(0, 6);
    for (const event of midway) store.apply({ ...event, replay: 1 });
    const partial = settle(store);
    expect(partial.status).toBe("running");
    expect(partial.nodes.model.text).toBe("Hello there");
    expect(partial.nodes.output.status).toBe("queued");

    for (const event of successfulRun().slice(6)) store.apply({ ...event, replay: 1 });
    const replayed = settle(store);
    expect(replayed.status).toBe("success");
    expect(replayed.nodes).toEqual(live.nodes);
    expect(replayed.outputs).toEqual(live.outputs);
    expect(replayed.lastSeq).toBe(live.lastSeq);
  });

  it("tells subscribers at most once per frame and reveals text like a typewriter", () => {
    const store = new RunStore();
    const calls = vi.fn();
    store.subscribe(calls);
    store.reset(RUN, "running", ["model"]);
    const e = script();
    store.apply(e("run_started"));
    store.apply(e("node_started", "model"));
    for (let i = 0; i < 100; i++) store.apply(e("on_token", "model", { data: "abcd" }));
    expect(calls).not.toHaveBeenCalled(); // nothing painted per token
    expect(store.getSnapshot().status).toBe("idle"); // the published snapshot waits too

    vi.advanceTimersByTime(16);
    expect(calls).toHaveBeenCalledTimes(1); // a hundred tokens, one paint
    const first = store.getSnapshot();
    expect(first.nodes.model.text).toHaveLength(400);
    expect(first.nodes.model.shown).toBeGreaterThan(0);
    expect(first.nodes.model.shown).toBeLessThan(400);
    expect(first.typing).toBe(true);

    const shown = [first.nodes.model.shown];
    while (store.getSnapshot().typing) {
      vi.advanceTimersByTime(16);
      shown.push(store.getSnapshot().nodes.model.shown);
    }
    expect(shown.at(-1)).toBe(400); // it catches up
    expect(shown.length).toBeGreaterThan(5); // over several frames...
    expect(shown.length).toBeLessThan(60); // ...faster while the backlog is long
    expect([...shown].sort((a, b) => a - b)).toEqual(shown);
    expect(calls).toHaveBeenCalledTimes(shown.length);

    vi.advanceTimersByTime(1000);
    expect(calls).toHaveBeenCalledTimes(shown.length); // idle: no more paints
  });
});

describe("human approval", () => {
  it("shows the question while the run waits, then the decision as it goes on", () => {
    const s = emptySnapshot();
    const ev = (seq: number, event: string, node_id: string | null, extra: Record<string, unknown> = {}) =>
      ({ seq, event, node_id, run_id: "r1", ts: "2026-12-07T10:00:00Z", ...extra }) as never;
    applyEvent(s, ev(1, "run_started", null));
    applyEvent(s, ev(2, "node_started", "check"));
    applyEvent(
      s,
      ev(3, "waiting_for_approval", "check", {
        data: { prompt: "Send?", value: "退款", role: "admin", allow_edit: true, timeout_at: null },
      }),
    );
    expect(s.status).toBe("waiting");
    expect(s.nodes.check.status).toBe("waiting");
    expect(s.approvals).toMatchObject([{ node_id: "check", prompt: "Send?", value: "退款", role: "admin" }]);
    applyEvent(s, ev(4, "run_resumed", null, { data: { after: ["check"] } }));
    applyEvent(
      s,
      ev(5, "approval_decided", "check", {
        data: { decision: "approved", by: "carol@example.com", comment: "ok", edited: false, timed_out: false },
      }),
    );
    expect(s.status).toBe("running");
    expect(s.approvals[0].decided).toMatchObject({ decision: "approved", by: "carol@example.com" });
    applyEvent(s, ev(6, "node_finished", "check", { data: { approved: "退款" } }));
    expect(s.nodes.check.status).toBe("done");
  });
});
