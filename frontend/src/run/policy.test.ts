// A node's policy in the UI: a retried node's attempts are never glued into one answer
// (each `node_retry` starts the text afresh and leaves a marker), a node that took its
// error port or fallback says so, the error port is an output only when the policy gives
// it, and a policy rides with the node through the graph's round trip.
import { describe, expect, it } from "vitest";

import type { RunEvent } from "../protocol/execClient";
import { ERROR_PORT, graphKey, portsOf, toFlow, toGraph, type Component, type Graph } from "../lib/graph";
import { tidyPolicy } from "../editor/PolicySection";
import { applyEvent, emptySnapshot, retryLabel } from "./runStore";

const llm: Component = {
  key: "llm.openai_chat",
  label: "OpenAI-compatible chat",
  category: "Models",
  description: "",
  inputs: [{ name: "prompt", type: "any" }],
  outputs: [{ name: "text", type: "text" }],
  params: { properties: {} },
};

function events(list: [string, string | null, Partial<RunEvent>][]): RunEvent[] {
  return list.map(([event, node_id, extra], i) => ({ event, run_id: "r", seq: i + 1, node_id, ts: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(), ...extra }));
}

describe("a retried node", () => {
  it("shows each attempt apart, with a marker per retry, and answers with the last", () => {
    const s = emptySnapshot();
    for (const e of events([
      ["run_started", null, {}],
      ["node_started", "llm", { data: { component: "llm.openai_chat" } }],
      ["on_token", "llm", { data: "Half an ans" }],
      ["node_retry", "llm", { attempt: 2, of: 3, error: "The model endpoint answered HTTP 503 (APIError).", code: "server_error", delay: 1.5 }],
      ["node_retry", "llm", { attempt: 3, of: 3, error: "The node did not finish within its timeout of 5 s.", code: "timeout", delay: 3 }],
      ["on_token", "llm", { data: "The whole" }],
      ["on_token", "llm", { data: " answer" }],
      ["node_finished", "llm", { data: "The whole answer", attempts: 3 }],
    ]))
      applyEvent(s, e);
    const n = s.nodes.llm;
    expect(n.text).toBe("The whole answer");
    expect(n.retries?.map(retryLabel)).toEqual(["attempt 2 of 3 after 503", "attempt 3 of 3 after a timeout"]);
    expect(n.status).toBe("done");
    expect(n.took).toBeUndefined();
  });

  it("says it took its error port, and its failed attempt's text is not its output", () => {
    const s = emptySnapshot();
    const failure = { code: "server_error", message: "The model endpoint answered HTTP 500 (APIError)." };
    for (const e of events([
      ["node_started", "llm", {}],
      ["on_token", "llm", { data: "partial" }],
      ["node_finished", "llm", { data: { error: failure }, took: "error_port", failure }],
    ]))
      applyEvent(s, e);
    expect(s.nodes.llm).toMatchObject({ status: "done", took: "error_port", failure, text: "" });
    expect(s.errors).toEqual([]);
  });
});

describe("the error port", () => {
  it("is an output only when the policy says error_port", () => {
    expect(portsOf(llm, {}).outputs.map((p) => p.name)).toEqual(["text"]);
    expect(portsOf(llm, {}, { retries: 2 }).outputs.map((p) => p.name)).toEqual(["text"]);
    expect(portsOf(llm, {}, { on_failure: "error_port" }).outputs).toEqual([{ name: "text", type: "text" }, ERROR_PORT]);
  });
});

describe("a node's policy in the graph", () => {
  it("survives the canvas round trip and is left out when a node has none", () => {
    const graph: Graph = {
      nodes: [
        { id: "a", component: "llm.openai_chat", params: {}, position: { x: 0, y: 0 }, policy: { retries: 2, on_failure: "error_port" } },
        { id: "b", component: "io.text_output", params: {}, position: { x: 200, y: 0 } },
      ],
      edges: [{ source: "a", source_port: "error", target: "b", target_port: "text" }],
    };
    const f = toFlow(graph);
    expect(toGraph(f.nodes, f.edges)).toEqual(graph);
    expect("policy" in toGraph(f.nodes, f.edges).nodes[1]).toBe(false);
    expect(graphKey(graph)).toContain('"policy":{"retries":2,"on_failure":"error_port"}');
  });

  it("keeps only what differs from the defaults", () => {
    expect(tidyPolicy({ retries: 0, on_failure: "stop", backoff_seconds: 1 })).toBeUndefined();
    expect(tidyPolicy({ retries: 0, backoff_seconds: 4, retry_on: ["timeout"] })).toBeUndefined();
    expect(tidyPolicy({ retries: 2, backoff_seconds: 1, retry_on: ["server_error", "rate_limited", "timeout", "connection"] })).toEqual({ retries: 2 });
    expect(tidyPolicy({ on_failure: "stop", fallback: "x" })).toBeUndefined();
    expect(tidyPolicy({ on_failure: "fallback", fallback: { a: 1 }, timeout_seconds: 30 })).toEqual({ timeout_seconds: 30, on_failure: "fallback", fallback: { a: 1 } });
  });
});

describe("a pinned node", () => {
  it("says which run's output it reused", () => {
    const s = emptySnapshot();
    for (const e of events([["node_finished", "llm", { data: "kept", pinned_from: "5b0c1d2e-run" }]])) applyEvent(s, e);
    expect(s.nodes.llm).toMatchObject({ status: "done", output: "kept", pinnedFrom: "5b0c1d2e-run" });
  });

  it("keeps its pin through the canvas round trip", () => {
    const graph: Graph = {
      nodes: [{ id: "a", component: "llm.openai_chat", params: {}, position: { x: 0, y: 0 }, pinned: { run: "r-1" } }],
      edges: [],
    };
    const f = toFlow(graph);
    expect(toGraph(f.nodes, f.edges)).toEqual(graph);
  });
});
