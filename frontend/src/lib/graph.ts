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

/** A node's policy (docs/protocol.md, "Node policy"): beside its params, for every component. */
export type OnFailure = "stop" | "error_port" | "fallback";
export type NodePolicy = {
  retries?: number;
  backoff_seconds?: number;
  retry_on?: string[];
  timeout_seconds?: number | null;
  on_failure?: OnFailure;
  fallback?: unknown;
};
/** The failures a policy may retry (flows.policy.RETRYABLE). */
export const RETRYABLE = ["server_error", "rate_limited", "timeout", "connection"] as const;
/** The extra output of a node whose policy says `on_failure: error_port`. */
export const ERROR_PORT: Port = { name: "error", type: "json", label: "Error" };

/** A node pinned to the output an earlier run recorded (docs/protocol.md, "Pinned outputs"). */
export type Pin = { run: string };

export type GraphNode = {
  id: string;
  component: string;
  params: Record<string, unknown>;
  position: { x: number; y: number };
  label?: string;
  policy?: NodePolicy;
  pinned?: Pin;
};

export type GraphEdge = { source: string; source_port: string; target: string; target_port: string };

/** A sticky note or a group frame (docs/protocol.md, "Canvas annotations"): layout only. */
export type Annotation = {
  id: string;
  kind: "note" | "group";
  text?: string;
  title?: string;
  position: { x: number; y: number };
  size: { width: number; height: number };
  color?: AnnotationColor;
};

export const ANNOTATION_COLORS = ["yellow", "blue", "green", "pink", "grey"] as const;
export type AnnotationColor = (typeof ANNOTATION_COLORS)[number];

export type Graph = { nodes: GraphNode[]; edges: GraphEdge[]; annotations?: Annotation[] };

export type NodeData = { component: string; params: Record<string, unknown>; label?: string; policy?: NodePolicy; pinned?: Pin };
export type NoteData = { text: string; color?: AnnotationColor };
export type GroupData = { title: string; color?: AnnotationColor };

export type FlowNode = Node<NodeData, "component">;
export type NoteNode = Node<NoteData, "note">;
export type GroupNode = Node<GroupData, "frame">;
/** Everything on the canvas: components (what runs) and annotations (what explains). */
export type CanvasNode = FlowNode | NoteNode | GroupNode;

export function isComponent(n: CanvasNode | undefined): n is FlowNode {
  return n?.type === "component";
}

export function edgeId(e: GraphEdge): string {
  return `${e.source}:${e.source_port}->${e.target}:${e.target_port}`;
}

const MIN_SIZE = 40;

function annotationNode(a: Annotation): NoteNode | GroupNode {
  const size = { width: Math.max(MIN_SIZE, a.size?.width ?? 200), height: Math.max(MIN_SIZE, a.size?.height ?? 120) };
  const common = { id: a.id, position: a.position ?? { x: 0, y: 0 }, ...size };
  if (a.kind === "group") {
    // Frames sit behind the nodes they enclose.
    // (React Flow's own "group" type comes with styles of its own: ours is a "frame".)
    return { ...common, type: "frame", zIndex: -1, data: { title: a.title ?? "", ...(a.color ? { color: a.color } : {}) } };
  }
  return { ...common, type: "note", data: { text: a.text ?? "", ...(a.color ? { color: a.color } : {}) } };
}

export function toFlow(graph: Graph): { nodes: CanvasNode[]; edges: Edge[] } {
  const annotations = Array.isArray(graph.annotations) ? graph.annotations : [];
  const groups = annotations.filter((a) => a.kind === "group").map(annotationNode);
  const notes = annotations.filter((a) => a.kind !== "group").map(annotationNode);
  return {
    nodes: [
      ...groups,
      ...(graph.nodes ?? []).map(
        (n): FlowNode => ({
          id: n.id,
          type: "component" as const,
          position: n.position ?? { x: 0, y: 0 },
          data: {
            component: n.component,
            params: n.params ?? {},
            ...(n.label !== undefined ? { label: n.label } : {}),
            ...(n.policy !== undefined ? { policy: n.policy } : {}),
            ...(n.pinned !== undefined ? { pinned: n.pinned } : {}),
          },
        }),
      ),
      ...notes,
    ],
    edges: (graph.edges ?? []).map((e) => ({
      id: edgeId(e),
      source: e.source,
      sourceHandle: e.source_port,
      target: e.target,
      targetHandle: e.target_port,
    })),
  };
}

function round(p: { x: number; y: number }): { x: number; y: number } {
  return { x: Math.round(p.x), y: Math.round(p.y) };
}

function sizeOf(n: CanvasNode): { width: number; height: number } {
  return {
    width: Math.round(n.width ?? n.measured?.width ?? 200),
    height: Math.round(n.height ?? n.measured?.height ?? 120),
  };
}

/** The graph of the canvas. `annotations` is left out when there are none, so a graph
 * that never had any keeps its exact form (and checksum). */
export function toGraph(nodes: CanvasNode[], edges: Edge[]): Graph {
  const annotations: Annotation[] = [];
  const graphNodes: GraphNode[] = [];
  for (const n of nodes) {
    if (n.type === "component") {
      graphNodes.push({
        id: n.id,
        component: n.data.component,
        params: n.data.params,
        position: round(n.position),
        ...(n.data.label !== undefined ? { label: n.data.label } : {}),
        // Left out when the node has none, so a graph without policies keeps its exact form.
        ...(n.data.policy !== undefined ? { policy: n.data.policy } : {}),
        ...(n.data.pinned !== undefined ? { pinned: n.data.pinned } : {}),
      });
    } else if (n.type === "note") {
      annotations.push({ id: n.id, kind: "note", text: n.data.text, position: round(n.position), size: sizeOf(n), ...(n.data.color ? { color: n.data.color } : {}) });
    } else if (n.type === "frame") {
      annotations.push({ id: n.id, kind: "group", title: n.data.title, position: round(n.position), size: sizeOf(n), ...(n.data.color ? { color: n.data.color } : {}) });
    }
  }
  const graph: Graph = {
    nodes: graphNodes,
    edges: edges.map((e) => ({
      source: e.source,
      source_port: e.sourceHandle ?? "",
      target: e.target,
      target_port: e.targetHandle ?? "",
    })),
  };
  if (annotations.length) graph.annotations = annotations;
  return graph;
}

/** Canonical JSON of a graph as the editor holds it (to compare canvas, draft and version). */
export function graphKey(graph: Graph): string {
  const f = toFlow(graph);
  return JSON.stringify(toGraph(f.nodes, f.edges));
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
 * A node's ports for its current params and policy. Most components have fixed ports (the
 * catalog's); a prompt template has one input per variable of its template, a router one
 * output per rule; a policy with `on_failure: error_port` adds the output `error`.
 */
export function portsOf(
  component: Component | undefined,
  params: Record<string, unknown>,
  policy?: NodePolicy,
): { inputs: Port[]; outputs: Port[] } {
  const ports = componentPorts(component, params);
  if (component && policy?.on_failure === "error_port" && !ports.outputs.some((p) => p.name === ERROR_PORT.name)) {
    return { inputs: ports.inputs, outputs: [...ports.outputs, ERROR_PORT] };
  }
  return ports;
}

function componentPorts(
  component: Component | undefined,
  params: Record<string, unknown>,
): { inputs: Port[]; outputs: Port[] } {
  if (!component) return { inputs: [], outputs: [] };
  if (component.key === "prompt.template") {
    // A template the user cleared is empty (no ports), not the default: only a param that
    // was never set falls back to the default, as it does on the server.
    const template = "template" in params ? params.template : component.params?.properties?.template?.default;
    const vars = typeof template === "string" ? templateVariables(template) : [];
    return { inputs: vars.map((name) => ({ name, type: "any", required: true })), outputs: component.outputs };
  }
  if (component.key === "flow.subflow") {
    // Its ports are the picked flow's chat inputs and text outputs (SubflowPicker).
    const names = (value: unknown) => (Array.isArray(value) ? value.filter((n): n is string => typeof n === "string") : []);
    return {
      inputs: names(params.inputs).map((name) => ({ name, type: "text", required: true })),
      outputs: names(params.outputs).map((name) => ({ name, type: "text" })),
    };
  }
  if (component.key === "flow.iterate" || component.key === "flow.loop") {
    // The items (a loop: its first input), and the body flow's other inputs (the same
    // for every item or iteration).
    const names = Array.isArray(params.inputs) ? params.inputs.filter((n): n is string => typeof n === "string") : [];
    const item = typeof params.item_input === "string" && params.item_input ? params.item_input : names[0];
    const first = component.key === "flow.loop" ? { name: "input", type: "text" } : { name: "items", type: "any" };
    return {
      inputs: [{ ...first, required: true }, ...names.filter((n) => n !== item).map((name) => ({ name, type: "text", required: true }))],
      outputs: component.outputs,
    };
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
