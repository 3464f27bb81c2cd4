/** The sub-flow node's picker: a flow of this workspace and its version (a number, or the
 * published one). Picking sets the node's ports from that version's graph (its chat inputs
 * and text outputs), which the server holds the node to (flows.subflows). */
import { useEffect, useState } from "react";
import type { Api } from "../lib/api";

type FlowRow = { id: number; name: string; latest_version: number | null };
type VersionRow = { number: number; is_draft?: boolean };
type GraphNodeLike = { id: string; component: string };

export function subflowPorts(graph: unknown): { inputs: string[]; outputs: string[] } {
  const nodes = ((graph as { nodes?: GraphNodeLike[] } | null)?.nodes ?? []).filter((n) => n && typeof n.id === "string");
  return {
    inputs: nodes.filter((n) => n.component === "io.chat_input").map((n) => n.id),
    outputs: nodes.filter((n) => n.component === "io.text_output").map((n) => n.id),
  };
}

export function SubflowPicker({
  api,
  params,
  readOnly,
  currentFlowId,
  onChange,
}: {
  api: Api;
  params: Record<string, unknown>;
  readOnly: boolean;
  currentFlowId?: number | null;
  onChange: (params: Record<string, unknown>) => void;
}) {
  const [flows, setFlows] = useState<FlowRow[]>([]);
  const [versions, setVersions] = useState<VersionRow[]>([]);
  const [error, setError] = useState<string | null>(null);
  const flow = typeof params.flow === "number" ? params.flow : null;
  const version = typeof params.version === "number" ? params.version : null;

  useEffect(() => {
    api
      .get<FlowRow[]>("flows")
      .then((rows) => setFlows(rows.filter((f) => f.id !== currentFlowId)))
      .catch((e: Error) => setError(e.message));
  }, [api, currentFlowId]);

  useEffect(() => {
    if (flow === null) return setVersions([]);
    api
      .get<VersionRow[]>(`flows/${flow}/versions`)
      .then((rows) => setVersions(rows.filter((v) => !v.is_draft)))
      .catch(() => setVersions([]));
  }, [api, flow]);

  /** Take the ports of `flowId` at `number` (null: its published version). */
  const pick = async (flowId: number, number: number | null) => {
    setError(null);
    try {
      let n = number;
      if (n === null) {
        const published = await api.get<{ version: number | null }>(`flows/${flowId}/publication`);
        if (published.version === null) {
          // Not published: pin its newest saved version (the published one can be chosen
          // once there is one).
          const latest = flows.find((f) => f.id === flowId)?.latest_version ?? null;
          if (latest === null) {
            setError("That flow has no saved version yet.");
            return;
          }
          return pick(flowId, latest);
        }
        n = published.version;
      }
      const detail = await api.get<{ graph: unknown }>(`flows/${flowId}/versions/${n}`);
      onChange({ ...params, flow: flowId, version: number, ...subflowPorts(detail.graph) });
    } catch (e) {
      setError((e as Error).message);
    }
  };

  return (
    <div className="subflow-picker" data-testid="subflow-picker">
      <label htmlFor="subflow-flow">Flow *</label>
      <select
        id="subflow-flow"
        data-testid="subflow-flow"
        disabled={readOnly}
        value={flow === null ? "" : String(flow)}
        onChange={(e) => e.target.value && void pick(Number(e.target.value), null)}
      >
        <option value="">— choose a flow —</option>
        {flows.map((f) => (
          <option key={f.id} value={String(f.id)}>
            {f.name}
          </option>
        ))}
      </select>
      <label htmlFor="subflow-version">Version</label>
      <select
        id="subflow-version"
        data-testid="subflow-version"
        disabled={readOnly || flow === null}
        value={version === null ? "" : String(version)}
        onChange={(e) => flow !== null && void pick(flow, e.target.value ? Number(e.target.value) : null)}
      >
        <option value="">the published version</option>
        {versions.map((v) => (
          <option key={v.number} value={String(v.number)}>
            v{v.number}
          </option>
        ))}
      </select>
      {flow !== null && (
        <p className="muted" data-testid="subflow-ports">
          Inputs: {(params.inputs as string[] | undefined)?.join(", ") || "none"} · Outputs:{" "}
          {(params.outputs as string[] | undefined)?.join(", ") || "none"}
        </p>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}
