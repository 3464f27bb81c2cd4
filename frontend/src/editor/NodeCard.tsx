import { Handle, Position, useUpdateNodeInternals, type NodeProps } from "@xyflow/react";
import { memo, useEffect } from "react";
import { ERROR_PORT, portsOf, typeColour, type FlowNode, type Port } from "../lib/graph";
import { retryLabel } from "../run/runStore";
import { useCatalog, useProblems, useRunView } from "./contexts";
import { formatDuration } from "../lib/format";

const STATUS_LABEL: Record<string, string> = {
  queued: "queued",
  running: "running",
  done: "done",
  error: "error",
  skipped: "skipped",
};

function PortRow({ nodeId, port, side, failure }: { nodeId: string; port: Port; side: "in" | "out"; failure?: boolean }) {
  const name = port.label || port.name;
  return (
    <div
      className={`port ${side}${failure ? " error-port" : ""}`}
      title={failure ? `${name}: taken when the node fails ({message, code})` : `${name}: ${port.type}${port.multi ? " (several)" : ""}`}
    >
      <Handle
        type={side === "in" ? "target" : "source"}
        position={side === "in" ? Position.Left : Position.Right}
        id={port.name}
        className={failure ? "handle error-handle" : "handle"}
        data-port-type={port.type}
        data-testid={`${side}-${nodeId}-${port.name}`}
        aria-label={failure ? `Error output (taken when the node fails)` : `${side === "in" ? "Input" : "Output"} ${name} (${port.type})`}
        style={failure ? undefined : { background: typeColour(port.type) }}
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
  const ports = portsOf(component, data.params, data.policy);
  const hasErrorPort = data.policy?.on_failure === "error_port";
  const lastRetry = state?.retries?.[state.retries.length - 1];
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
        {data.pinned && (
          <span className="node-pin" data-testid={`pin-badge-${id}`} title={`Pinned to the output of run ${data.pinned.run}: runs reuse it`}>
            {" "}◉ pinned
          </span>
        )}
        {data.policy && (
          <span className="node-policy" data-testid={`policy-badge-${id}`} title="This node has a failure policy (retries, timeout, on failure)">
            {data.policy.retries ? ` ↻${data.policy.retries}` : ""}
            {data.policy.timeout_seconds ? ` ⏱${data.policy.timeout_seconds}s` : ""}
            {data.policy.on_failure === "fallback" ? " ⤷ fallback" : ""}
          </span>
        )}
      </div>
      {lastRetry && status === "running" && (
        <div className="node-retry" data-testid={`node-retry-${id}`} title={lastRetry.error}>
          ↻ {retryLabel(lastRetry)}
        </div>
      )}
      {state?.took && (
        <div className="node-retry" data-testid={`node-took-${id}`} title={state.failure?.message}>
          {state.took === "error_port" ? "⤷ error port taken" : "⤷ fallback used"}
        </div>
      )}
      <div className="node-ports">
        <div className="ports-in">
          {ports.inputs.map((p) => (
            <PortRow key={p.name} nodeId={id} port={p} side="in" />
          ))}
        </div>
        <div className="ports-out">
          {ports.outputs.map((p) => (
            <PortRow key={p.name} nodeId={id} port={p} side="out" failure={hasErrorPort && p.name === ERROR_PORT.name} />
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
