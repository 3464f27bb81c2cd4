/** Why two ports can or cannot be connected, in words (the canvas refuses a drag that
 * would fail, and says why; the keyboard dialog lists only what can connect). */
import type { Edge } from "@xyflow/react";
import { isComponent, portsOf, typesCompatible, type CanvasNode, type Component, type Port } from "./graph";

export type End = { node: string; port: string | null | undefined; side: "source" | "target" };

export function portName(p: Port): string {
  return p.label || p.name;
}

export function findPort(
  nodes: CanvasNode[],
  catalog: Map<string, Component>,
  nodeId: string,
  port: string | null | undefined,
  side: "inputs" | "outputs",
): Port | undefined {
  const node = nodes.find((n) => n.id === nodeId);
  if (!isComponent(node)) return undefined;
  return portsOf(catalog.get(node.data.component), node.data.params, node.data.policy)[side].find((p) => p.name === port);
}

/** null when `a` -> `b` can be connected, else a sentence saying why not. */
export function connectionProblem(
  a: End,
  b: End,
  nodes: CanvasNode[],
  edges: Edge[],
  catalog: Map<string, Component>,
): string | null {
  if (a.side === b.side) {
    return a.side === "source"
      ? "Can't connect two outputs: drag from an output (right side) to an input (left side)."
      : "Can't connect two inputs: drag from an output (right side) to an input (left side).";
  }
  const [src, dst] = a.side === "source" ? [a, b] : [b, a];
  if (src.node === dst.node) return "Can't connect a node to itself.";
  const out = findPort(nodes, catalog, src.node, src.port, "outputs");
  const inp = findPort(nodes, catalog, dst.node, dst.port, "inputs");
  if (!out || !inp) return "That port no longer exists.";
  if (!typesCompatible(out.type, inp.type)) {
    return `Can't connect ${portName(out)} (${out.type}) to ${portName(inp)} (${inp.type}).`;
  }
  if (edges.some((e) => e.source === src.node && e.sourceHandle === src.port && e.target === dst.node && e.targetHandle === dst.port)) {
    return `${portName(out)} is already connected to ${portName(inp)}.`;
  }
  if (!inp.multi && edges.some((e) => e.target === dst.node && e.targetHandle === dst.port)) {
    return `${portName(inp)} of ${dst.node} already has a connection: delete it first to replace it.`;
  }
  return null;
}
