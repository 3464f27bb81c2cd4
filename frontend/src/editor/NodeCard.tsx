import { Handle, Position, type NodeProps } from "@xyflow/react";
import { memo } from "react";
import { portsOf, typeColour, type FlowNode } from "../lib/graph";
import { useCatalog, useProblems, useRunView } from "./contexts";
import { formatDuration } from "../lib/format";

const STATUS_LABEL: Record<string, string> = {
  queued: "queued",
  running: "running",
  done: "done",
  error: "error",
  skipped: "skipped",
};

/** One component on the canvas: typed ports, run status, streamed preview, problems. */
function NodeCardImpl({ id, data, selected }: NodeProps<FlowNode>) {
  const catalog = useCatalog();
  const run = useRunView();
  const problems = useProblems()[id] ?? [];
  const component = catalog.get(data.component);
  const state = run.nodes[id];
  const status = state?.status;
  const preview = state ? state.text.slice(0, state.shown).slice(-90) : "";
  const ports = portsOf(component, data.params);
  const rows = Math.max(ports.inputs.length, ports.outputs.length, 1);
  return (
    <div
      className={`node-card${selected ? " selected" : ""}${status ? ` st-${status}` : ""}${problems.length ? " invalid" : ""}`}
      data-testid={`node-${id}`}
      data-status={status ?? ""}
    >
      <div className="node-head">
        <span className="node-title">{component?.label ?? data.component}</span>
        {status && (
          <span className={`node-status st-${status}`} data-testid={`node-status-${id}`}>
            {STATUS_LABEL[status]}
            {state?.durationMs !== undefined ? ` · ${formatDuration(state.durationMs)}` : ""}
          </span>
        )}
      </div>
      <div className="node-sub">
        <code>{id}</code>
        {!component && <span className="error"> unknown component</span>}
      </div>
      <div className="node-ports" style={{ minHeight: rows * 22 }}>
        <div className="ports-in">
          {ports.inputs.map((p) => (
            <div className="port in" key={p.name} title={`${p.name}: ${p.type}`}>
              <Handle
                type="target"
                position={Position.Left}
                id={p.name}
                className="handle"
                data-port-type={p.type}
                data-testid={`in-${id}-${p.name}`}
                style={{ background: typeColour(p.type) }}
              />
              <span>{p.label || p.name}</span>
              <small style={{ color: typeColour(p.type) }}>{p.type}{p.multi ? "[]" : ""}</small>
            </div>
          ))}
        </div>
        <div className="ports-out">
          {ports.outputs.map((p) => (
            <div className="port out" key={p.name} title={`${p.name}: ${p.type}`}>
              <small style={{ color: typeColour(p.type) }}>{p.type}</small>
              <span>{p.label || p.name}</span>
              <Handle
                type="source"
                position={Position.Right}
                id={p.name}
                className="handle"
                data-port-type={p.type}
                data-testid={`out-${id}-${p.name}`}
                style={{ background: typeColour(p.type) }}
              />
            </div>
          ))}
        </div>
      </div>
      {preview && <div className="node-preview">{preview}</div>}
      {state?.error && <div className="node-error" role="alert">{state.error}</div>}
      {problems.length > 0 && (
        <ul className="node-problems" data-testid={`problems-${id}`}>
          {problems.map((p, i) => (
            <li key={i}>{p}</li>
          ))}
        </ul>
      )}
    </div>
  );
}

export const NodeCard = memo(NodeCardImpl);
