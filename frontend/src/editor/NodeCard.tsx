import { Handle, Position, useUpdateNodeInternals, type NodeProps } from "@xyflow/react";
import { memo, useEffect } from "react";
import { portsOf, typeColour, type FlowNode, type Port } from "../lib/graph";
import { useCatalog, useProblems, useRunView } from "./contexts";
import { formatDuration } from "../lib/format";

const STATUS_LABEL: Record<string, string> = {
  queued: "queued",
  running: "running",
  done: "done",
  error: "error",
  skipped: "skipped",
};

function PortRow({ nodeId, port, side }: { nodeId: string; port: Port; side: "in" | "out" }) {
  const name = port.label || port.name;
  return (
    <div className={`port ${side}`} title={`${name}: ${port.type}${port.multi ? " (several)" : ""}`}>
      <Handle
        type={side === "in" ? "target" : "source"}
        position={side === "in" ? Position.Left : Position.Right}
        id={port.name}
        className="handle"
        data-port-type={port.type}
        data-testid={`${side}-${nodeId}-${port.name}`}
        aria-label={`${side === "in" ? "Input" : "Output"} ${name} (${port.type})`}
        style={{ background: typeColour(port.type) }}
      />
      <span className="port-name">{name}</span>
      <small className="port-type">
        {port.type}
        {port.multi ? "[]" : ""}
      </small>
    </div>
  );
}

/**
 * One component on the canvas. Its size does not change with what happens to it: problems
 * are a badge (listed in the side panel), a run's text is a two-line strip; handles sit
 * inside the card, large enough to hit.
 */
function NodeCardImpl({ id, data, selected }: NodeProps<FlowNode>) {
  const catalog = useCatalog();
  const run = useRunView();
  const problems = useProblems()[id] ?? [];
  const component = catalog.get(data.component);
  const state = run.nodes[id];
  const status = state?.status;
  const preview = state ? state.text.slice(0, state.shown).slice(-120) : "";
  const ports = portsOf(component, data.params);
  // Ports come and go with the params (a router's rules, a template's variables): React
  // Flow must measure the handles again, or a new port could not be connected.
  const updateInternals = useUpdateNodeInternals();
  const signature = `${ports.inputs.map((p) => p.name).join(",")}|${ports.outputs.map((p) => p.name).join(",")}`;
  useEffect(() => updateInternals(id), [id, signature, updateInternals]);
  return (
    <div
      className={`node-card${selected ? " selected" : ""}${status ? ` st-${status}` : ""}${problems.length ? " invalid" : ""}`}
      data-testid={`node-${id}`}
      data-status={status ?? ""}
    >
      <div className="node-head">
        <span className="node-title" title={component?.description}>
          {component?.label ?? data.component}
        </span>
        {problems.length > 0 && (
          <span className="node-badge" data-testid={`problems-${id}`} title={problems.join("\n")}>
            <span aria-hidden="true">⚠ {problems.length}</span>
            <span className="visually-hidden">
              {problems.length === 1 ? "1 problem" : `${problems.length} problems`}: {problems.join(" ")}
            </span>
          </span>
        )}
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
      <div className="node-ports">
        <div className="ports-in">
          {ports.inputs.map((p) => (
            <PortRow key={p.name} nodeId={id} port={p} side="in" />
          ))}
        </div>
        <div className="ports-out">
          {ports.outputs.map((p) => (
            <PortRow key={p.name} nodeId={id} port={p} side="out" />
          ))}
        </div>
      </div>
      {(preview || state?.error) && (
        <div className={`node-strip${state?.error ? " node-error" : ""}`} role={state?.error ? "alert" : undefined}>
          {state?.error ?? preview}
        </div>
      )}
    </div>
  );
}

export const NodeCard = memo(NodeCardImpl);
