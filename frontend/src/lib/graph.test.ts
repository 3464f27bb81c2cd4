import { describe, expect, it } from "vitest";
import { connectionProblem } from "./connect";
import { graphKey, portsOf, toFlow, toGraph, type Component, type Graph } from "./graph";
import { splitBlocks } from "../run/LongText";

const demo: Component = {
  key: "llm.demo",
  label: "Demo model",
  category: "Models",
  description: "",
  inputs: [{ name: "prompt", type: "any", label: "Prompt" }],
  outputs: [{ name: "text", type: "text", label: "Reply" }],
  params: { properties: {} },
};
const bm25: Component = {
  key: "retriever.bm25",
  label: "BM25",
  category: "Retrieval",
  description: "",
  inputs: [
    { name: "documents", type: "documents", label: "Documents" },
    { name: "query", type: "any", label: "Query" },
  ],
  outputs: [],
  params: { properties: {} },
};
const template: Component = {
  key: "prompt.template",
  label: "Prompt template",
  category: "Prompts",
  description: "",
  inputs: [],
  outputs: [{ name: "prompt", type: "text" }],
  params: { properties: { template: { type: "string", default: "{input}" } } },
};

describe("the graph the canvas holds", () => {
  it("round-trips nodes, edges and annotations exactly", () => {
    const graph: Graph = {
      nodes: [{ id: "a", component: "llm.demo", params: { reply: "x" }, position: { x: 1, y: 2 } }],
      edges: [],
      annotations: [
        { id: "n", kind: "note", text: "hi", position: { x: 0, y: 0 }, size: { width: 200, height: 90 }, color: "yellow" },
        { id: "g", kind: "group", title: "G", position: { x: -10, y: -40 }, size: { width: 300, height: 200 } },
      ],
    };
    const f = toFlow(graph);
    const back = toGraph(f.nodes, f.edges);
    expect(back.nodes).toEqual(graph.nodes);
    expect([...(back.annotations ?? [])].sort((x, y) => x.id.localeCompare(y.id))).toEqual(
      [...graph.annotations!].sort((x, y) => x.id.localeCompare(y.id)),
    );
  });

  it("leaves annotations out when there are none (the graph keeps its checksum)", () => {
    const key = graphKey({ nodes: [], edges: [] });
    expect(JSON.parse(key)).toEqual({ nodes: [], edges: [] });
  });

  it("takes a cleared template as empty, not as its default", () => {
    expect(portsOf(template, { template: "" }).inputs).toEqual([]);
    expect(portsOf(template, {}).inputs.map((p) => p.name)).toEqual(["input"]);
    expect(portsOf(template, { template: "Hi {name}" }).inputs.map((p) => p.name)).toEqual(["name"]);
  });
});

describe("why a connection is refused", () => {
  const flow = toFlow({
    nodes: [
      { id: "m", component: "llm.demo", params: {}, position: { x: 0, y: 0 } },
      { id: "r", component: "retriever.bm25", params: {}, position: { x: 300, y: 0 } },
    ],
    edges: [],
  });
  const catalog = new Map([
    ["llm.demo", demo],
    ["retriever.bm25", bm25],
  ]);

  it("names both ports and their types on a mismatch", () => {
    const problem = connectionProblem(
      { node: "m", port: "text", side: "source" },
      { node: "r", port: "documents", side: "target" },
      flow.nodes,
      flow.edges,
      catalog,
    );
    expect(problem).toBe("Can't connect Reply (text) to Documents (documents).");
  });

  it("accepts what fits, whichever end the drag started from", () => {
    const a = { node: "r", port: "query", side: "target" as const };
    const b = { node: "m", port: "text", side: "source" as const };
    expect(connectionProblem(a, b, flow.nodes, flow.edges, catalog)).toBeNull();
  });

  it("refuses a node to itself and two inputs", () => {
    expect(
      connectionProblem({ node: "m", port: "text", side: "source" }, { node: "m", port: "prompt", side: "target" }, flow.nodes, flow.edges, catalog),
    ).toBe("Can't connect a node to itself.");
    expect(
      connectionProblem({ node: "m", port: "prompt", side: "target" }, { node: "r", port: "query", side: "target" }, flow.nodes, flow.edges, catalog),
    ).toMatch(/two inputs/);
  });
});

describe("long text in blocks", () => {
  it("keeps every character and the earlier blocks as the text grows", () => {
    const text = Array.from({ length: 3000 }, (_, i) => `line ${i}\n`).join("");
    const blocks = splitBlocks(text);
    expect(blocks.join("")).toBe(text);
    expect(blocks.length).toBeGreaterThan(5);
    const grown = splitBlocks(text + "more text");
    expect(grown.slice(0, blocks.length - 1)).toEqual(blocks.slice(0, -1));
  });
});
