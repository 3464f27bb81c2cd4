/** The flow graph (docs/protocol.md, "The flow graph") and its React Flow form. */
import type { Edge, Node } from "@xyflow/react";

export type Port = { name: string; type: string; label?: string; required?: boolean; multi?: boolean };

export type JsonSchema = {
  type?: string | string[];
  title?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  format?: string;
  minimum?: number;
  maximum?: number;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  "x-widget"?: string;
  widget?: string;
  [key: string]: unknown;
};

export type Component = {
  key: string;
  label: string;
  category: string;
  description: string;
  inputs: Port[];
  outputs: Port[];
  params: JsonSchema;
};

export type GraphNode = {
  id: string;
  component: string;
  params: Record<string, unknown>;
  position: { x: number; y: number };
};

export type GraphEdge = { source: string; source_port: string; target: string; target_port: string };

export type Graph = { nodes: GraphNode[]; edges: GraphEdge[] };

export type NodeData = { component: string; params: Record<string, unknown> };

export type FlowNode = Node<NodeData, "component">;

export function edgeId(e: GraphEdge): string {
  return `${e.source}:${e.source_port}->${e.target}:${e.target_port}`;
}

export function toFlow(graph: Graph): { nodes: FlowNode[]; edges: Edge[] } {
  return {
    nodes: (graph.nodes ?? []).map((n) => ({
      id: n.id,
      type: "component" as const,
      position: n.position ?? { x: 0, y: 0 },
      data: { component: n.component, params: n.params ?? {} },
    })),
    edges: (graph.edges ?? []).map((e) => ({
      id: edgeId(e),
      source: e.source,
      sourceHandle: e.source_port,
      target: e.target,
      targetHandle: e.target_port,
    })),
  };
}

export function toGraph(nodes: FlowNode[], edges: Edge[]): Graph {
  return {
    nodes: nodes.map((n) => ({
      id: n.id,
      component: n.data.component,
      params: n.data.params,
      position: { x: Math.round(n.position.x), y: Math.round(n.position.y) },
    })),
    edges: edges.map((e) => ({
      source: e.source,
      source_port: e.sourceHandle ?? "",
      target: e.target,
      target_port: e.targetHandle ?? "",
    })),
  };
}

/** Default parameter values from a component's JSON Schema. */
export function defaultParams(schema: JsonSchema): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, prop] of Object.entries(schema.properties ?? {})) {
    if (prop.default !== undefined) out[key] = prop.default;
  }
  return out;
}

/** A fresh node id like `llm_demo_2` that is not taken yet. */
export function newNodeId(component: string, taken: Set<string>): string {
  const stem = component.split(".").pop()!.replace(/[^a-zA-Z0-9_]/g, "_");
  for (let i = 1; ; i++) {
    const id = `${stem}_${i}`;
    if (!taken.has(id)) return id;
  }
}

/** Port types that connect: equal, or either side accepts anything. */
export function typesCompatible(out: string, inp: string): boolean {
  return out === inp || out === "any" || inp === "any";
}

const TYPE_COLOURS: Record<string, string> = {
  text: "#2f7de1",
  string: "#2f7de1",
  prompt: "#8a4fd8",
  messages: "#0f9d8a",
  message: "#0f9d8a",
  model: "#d9822b",
  llm: "#d9822b",
  tool: "#c23a6b",
  tools: "#c23a6b",
  documents: "#6b8e23",
  retriever: "#6b8e23",
  json: "#7a6a58",
  any: "#7d8596",
};

export function typeColour(type: string): string {
  if (TYPE_COLOURS[type]) return TYPE_COLOURS[type];
  let h = 0;
  for (const ch of type) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h} 55% 45%)`;
}

/** `{name}` variables of a LangChain f-string template (`{{` escapes a brace). */
export function templateVariables(template: string): string[] {
  const found: string[] = [];
  const re = /\{\{|\}\}|\{([a-zA-Z_][a-zA-Z0-9_]*)\}/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(template))) {
    if (m[1] && !found.includes(m[1])) found.push(m[1]);
  }
  return found;
}

/**
 * A node's ports for its current params. Most components have fixed ports (the catalog's);
 * a prompt template has one input per variable of its template, a router one output per rule.
 */
export function portsOf(
  component: Component | undefined,
  params: Record<string, unknown>,
): { inputs: Port[]; outputs: Port[] } {
  if (!component) return { inputs: [], outputs: [] };
  if (component.key === "prompt.template") {
    const template = params.template ?? component.params?.properties?.template?.default;
    const vars = typeof template === "string" ? templateVariables(template) : [];
    return { inputs: vars.map((name) => ({ name, type: "any", required: true })), outputs: component.outputs };
  }
  if (component.key === "logic.router" && Array.isArray(params.rules)) {
    const names: string[] = [];
    for (const rule of params.rules as { output?: unknown }[]) {
      if (typeof rule?.output === "string" && !names.includes(rule.output)) names.push(rule.output);
    }
    const fallback = typeof params.default_output === "string" ? params.default_output : "default";
    if (!names.includes(fallback)) names.push(fallback);
    return { inputs: component.inputs, outputs: names.map((name) => ({ name, type: "text" })) };
  }
  return { inputs: component.inputs, outputs: component.outputs };
}
