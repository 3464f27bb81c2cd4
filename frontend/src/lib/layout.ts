/**
 * Auto-layout ("Tidy up") with dagre (@dagrejs/dagre, pinned in package.json): components
 * left to right in the order data flows, each rank a column. Group frames are fitted again
 * around the nodes they enclosed; notes stay where they were.
 */
import dagre from "@dagrejs/dagre";
import type { Edge } from "@xyflow/react";
import type { CanvasNode } from "./graph";

const NODE_W = 240;
const NODE_H = 120;
const GROUP_PAD = { x: 24, top: 44, bottom: 24 };

type Box = { x: number; y: number; w: number; h: number };

function boxOf(n: CanvasNode): Box {
  return {
    x: n.position.x,
    y: n.position.y,
    w: n.width ?? n.measured?.width ?? NODE_W,
    h: n.height ?? n.measured?.height ?? NODE_H,
  };
}

function inside(inner: Box, outer: Box): boolean {
  const cx = inner.x + inner.w / 2;
  const cy = inner.y + inner.h / 2;
  return cx >= outer.x && cx <= outer.x + outer.w && cy >= outer.y && cy <= outer.y + outer.h;
}

/** The nodes a group frame encloses (by their centres). */
export function membersOf(group: CanvasNode, nodes: CanvasNode[]): CanvasNode[] {
  const frame = boxOf(group);
  return nodes.filter((n) => n.type === "component" && inside(boxOf(n), frame));
}

/** The frame that encloses `members` with room for its title. */
export function frameAround(members: CanvasNode[]): { position: { x: number; y: number }; width: number; height: number } {
  const boxes = members.map(boxOf);
  const x0 = Math.min(...boxes.map((b) => b.x)) - GROUP_PAD.x;
  const y0 = Math.min(...boxes.map((b) => b.y)) - GROUP_PAD.top;
  const x1 = Math.max(...boxes.map((b) => b.x + b.w)) + GROUP_PAD.x;
  const y1 = Math.max(...boxes.map((b) => b.y + b.h)) + GROUP_PAD.bottom;
  return { position: { x: Math.round(x0), y: Math.round(y0) }, width: Math.round(x1 - x0), height: Math.round(y1 - y0) };
}

export function autoLayout(nodes: CanvasNode[], edges: Edge[]): CanvasNode[] {
  const components = nodes.filter((n) => n.type === "component");
  if (!components.length) return nodes;
  const groups = nodes.filter((n) => n.type === "frame").map((g) => ({ g, members: membersOf(g, nodes).map((m) => m.id) }));
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 36, ranksep: 64, marginx: 0, marginy: 0 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of components) {
    const b = boxOf(n);
    g.setNode(n.id, { width: b.w, height: b.h });
  }
  for (const e of edges) {
    if (g.hasNode(e.source) && g.hasNode(e.target)) g.setEdge(e.source, e.target);
  }
  dagre.layout(g);
  const origin = components.reduce((o, n) => ({ x: Math.min(o.x, n.position.x), y: Math.min(o.y, n.position.y) }), { x: Infinity, y: Infinity });
  const placed = new Map<string, { x: number; y: number }>();
  for (const n of components) {
    const p = g.node(n.id);
    const b = boxOf(n);
    placed.set(n.id, { x: Math.round(origin.x + p.x - b.w / 2), y: Math.round(origin.y + p.y - b.h / 2) });
  }
  const moved = nodes.map((n) => (placed.has(n.id) ? { ...n, position: placed.get(n.id)! } : n));
  return moved.map((n) => {
    if (n.type !== "frame") return n;
    const ids = groups.find((x) => x.g.id === n.id)?.members ?? [];
    const members = moved.filter((m) => ids.includes(m.id));
    return members.length ? { ...n, ...frameAround(members) } : n;
  });
}
