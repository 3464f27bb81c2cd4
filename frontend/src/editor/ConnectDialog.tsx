/**
 * Connecting two ports without a mouse: pick one of the selected node's ports, then the
 * other end from the list of ports that can take it (Enter connects). Opened with the
 * node's "Connect…" button or the C key while a node is selected.
 */
import type { Connection, Edge } from "@xyflow/react";
import { useEffect, useMemo, useRef, useState } from "react";
import { connectionProblem, portName } from "../lib/connect";
import { isComponent, portsOf, type CanvasNode, type Component } from "../lib/graph";

type Choice = { value: string; label: string; connection: Connection };

export function ConnectDialog({
  nodeId,
  nodes,
  edges,
  catalog,
  onConnect,
  onClose,
}: {
  nodeId: string;
  nodes: CanvasNode[];
  edges: Edge[];
  catalog: Map<string, Component>;
  onConnect: (c: Connection) => void;
  onClose: () => void;
}) {
  const node = nodes.find((n) => n.id === nodeId);
  const ports = isComponent(node) ? portsOf(catalog.get(node.data.component), node.data.params, node.data.policy) : { inputs: [], outputs: [] };
  const own = [
    ...ports.outputs.map((p) => ({ value: `out:${p.name}`, label: `Output ${portName(p)} (${p.type})`, side: "source" as const, port: p.name })),
    ...ports.inputs.map((p) => ({ value: `in:${p.name}`, label: `Input ${portName(p)} (${p.type})`, side: "target" as const, port: p.name })),
  ];
  const [from, setFrom] = useState(own[0]?.value ?? "");
  const [to, setTo] = useState("");
  const first = useRef<HTMLSelectElement>(null);
  useEffect(() => first.current?.focus(), []);
  const mine = own.find((o) => o.value === from);

  const choices = useMemo<Choice[]>(() => {
    if (!mine) return [];
    const out: Choice[] = [];
    for (const other of nodes) {
      if (!isComponent(other) || other.id === nodeId) continue;
      const theirs = portsOf(catalog.get(other.data.component), other.data.params, other.data.policy);
      const list = mine.side === "source" ? theirs.inputs : theirs.outputs;
      for (const p of list) {
        const a = { node: nodeId, port: mine.port, side: mine.side };
        const b = { node: other.id, port: p.name, side: mine.side === "source" ? ("target" as const) : ("source" as const) };
        if (connectionProblem(a, b, nodes, edges, catalog)) continue;
        const connection: Connection =
          mine.side === "source"
            ? { source: nodeId, sourceHandle: mine.port, target: other.id, targetHandle: p.name }
            : { source: other.id, sourceHandle: p.name, target: nodeId, targetHandle: mine.port };
        const label = `${catalog.get(other.data.component)?.label ?? other.data.component} · ${other.id} · ${portName(p)} (${p.type})`;
        out.push({ value: `${other.id}:${p.name}`, label, connection });
      }
    }
    return out;
  }, [catalog, edges, mine, nodeId, nodes]);

  useEffect(() => setTo(choices[0]?.value ?? ""), [from, choices.length]); // eslint-disable-line react-hooks/exhaustive-deps

  const submit = () => {
    const choice = choices.find((c) => c.value === to);
    if (!choice) return;
    onConnect(choice.connection);
    onClose();
  };

  return (
    <div className="dialog-backdrop" onKeyDown={(e) => e.key === "Escape" && onClose()}>
      <form
        className="dialog"
        role="dialog"
        aria-modal="true"
        aria-label={`Connect a port of ${nodeId}`}
        data-testid="connect-dialog"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <h2>Connect {nodeId}</h2>
        <label htmlFor="connect-from">Port of this node</label>
        <select id="connect-from" ref={first} value={from} onChange={(e) => setFrom(e.target.value)} data-testid="connect-from">
          {own.map((o) => (
            <option key={o.value} value={o.value}>
              {o.label}
            </option>
          ))}
        </select>
        <label htmlFor="connect-to">{mine?.side === "target" ? "Take it from" : "Send it to"}</label>
        {choices.length ? (
          <select
            id="connect-to"
            size={Math.min(8, Math.max(3, choices.length))}
            value={to}
            onChange={(e) => setTo(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter") {
                e.preventDefault();
                submit();
              }
            }}
            data-testid="connect-to"
          >
            {choices.map((c) => (
              <option key={c.value} value={c.value}>
                {c.label}
              </option>
            ))}
          </select>
        ) : (
          <p className="muted" data-testid="connect-none">
            No port of another node can connect to this one.
          </p>
        )}
        <div className="buttons">
          <button type="submit" disabled={!choices.length} data-testid="connect-submit">
            Connect
          </button>
          <button type="button" className="secondary" onClick={onClose}>
            Cancel
          </button>
        </div>
      </form>
    </div>
  );
}
