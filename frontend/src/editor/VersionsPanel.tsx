import { useState } from "react";
import type { Component, Graph } from "../lib/graph";
import { formatTime } from "../lib/format";

export type VersionInfo = {
  number: number;
  note: string;
  created_at: string;
  created_by: string | null;
  is_draft: boolean;
};

type Diff = {
  added: string[];
  removed: string[];
  changed: { id: string; keys: string[] }[];
  edgesAdded: string[];
  edgesRemoved: string[];
};

function edgeKey(e: Graph["edges"][number]): string {
  return `${e.source}.${e.source_port} → ${e.target}.${e.target_port}`;
}

export function diffGraphs(a: Graph, b: Graph): Diff {
  const an = new Map(a.nodes.map((n) => [n.id, n]));
  const bn = new Map(b.nodes.map((n) => [n.id, n]));
  const changed: Diff["changed"] = [];
  for (const [id, nb] of bn) {
    const na = an.get(id);
    if (!na) continue;
    const keys = new Set([...Object.keys(na.params ?? {}), ...Object.keys(nb.params ?? {})]);
    const diffKeys = [...keys].filter((k) => JSON.stringify(na.params?.[k]) !== JSON.stringify(nb.params?.[k]));
    if (na.component !== nb.component) diffKeys.unshift("component");
    if (diffKeys.length) changed.push({ id, keys: diffKeys });
  }
  const ae = new Set(a.edges.map(edgeKey));
  const be = new Set(b.edges.map(edgeKey));
  return {
    added: [...bn.keys()].filter((id) => !an.has(id)),
    removed: [...an.keys()].filter((id) => !bn.has(id)),
    changed,
    edgesAdded: [...be].filter((k) => !ae.has(k)),
    edgesRemoved: [...ae].filter((k) => !be.has(k)),
  };
}

/** Version history: load one onto the canvas, or compare two. */
export function VersionsPanel({
  versions,
  current,
  onLoad,
  fetchGraph,
  catalog,
}: {
  versions: VersionInfo[];
  current: number | null;
  onLoad: (n: number) => Promise<void>;
  fetchGraph: (n: number) => Promise<Graph>;
  catalog: Map<string, Component>;
}) {
  const sorted = [...versions].sort((x, y) => y.number - x.number);
  const [left, setLeft] = useState<number | "">(sorted[1]?.number ?? "");
  const [right, setRight] = useState<number | "">(sorted[0]?.number ?? "");
  const [diff, setDiff] = useState<Diff | null>(null);
  const [error, setError] = useState<string | null>(null);
  const label = (id: string, g?: Graph) => {
    const key = g?.nodes.find((n) => n.id === id)?.component;
    return key ? `${id} (${catalog.get(key)?.label ?? key})` : id;
  };

  return (
    <section className="versions" aria-label="Versions">
      <h2>Versions</h2>
      {sorted.length === 0 && <p className="muted">No saved versions yet.</p>}
      <ol className="version-list">
        {sorted.map((v) => (
          <li key={v.number} data-testid={`version-${v.number}`}>
            <strong>v{v.number}</strong>
            {v.is_draft && <span className="badge">draft</span>}
            {current === v.number && <span className="badge">on canvas</span>}
            <div className="muted">
              {formatTime(v.created_at)}
              {v.created_by ? ` · ${v.created_by}` : ""}
            </div>
            {v.note && <div>{v.note}</div>}
            <button
              type="button"
              className="secondary"
              onClick={() => onLoad(v.number).catch((err: Error) => setError(err.message))}
            >
              Load
            </button>
          </li>
        ))}
      </ol>
      {sorted.length > 1 && (
        <form
          className="diff-form"
          onSubmit={async (e) => {
            e.preventDefault();
            if (left === "" || right === "") return;
            setError(null);
            try {
              const [a, b] = await Promise.all([fetchGraph(left), fetchGraph(right)]);
              setDiff(diffGraphs(a, b));
            } catch (err) {
              setError((err as Error).message);
            }
          }}
        >
          <h3>Compare</h3>
          <label htmlFor="diff-left">From</label>
          <select id="diff-left" value={left} onChange={(e) => setLeft(Number(e.target.value))}>
            {sorted.map((v) => (
              <option key={v.number} value={v.number}>
                v{v.number}
              </option>
            ))}
          </select>
          <label htmlFor="diff-right">To</label>
          <select id="diff-right" value={right} onChange={(e) => setRight(Number(e.target.value))}>
            {sorted.map((v) => (
              <option key={v.number} value={v.number}>
                v{v.number}
              </option>
            ))}
          </select>
          <button type="submit">Show differences</button>
        </form>
      )}
      {error && <p className="error" role="alert">{error}</p>}
      {diff && (
        <div className="diff" data-testid="diff">
          {diff.added.length + diff.removed.length + diff.changed.length + diff.edgesAdded.length + diff.edgesRemoved.length === 0 && (
            <p>No differences.</p>
          )}
          <ul>
            {diff.added.map((id) => (
              <li key={`a${id}`} className="added">+ node {label(id)}</li>
            ))}
            {diff.removed.map((id) => (
              <li key={`r${id}`} className="removed">− node {label(id)}</li>
            ))}
            {diff.changed.map((c) => (
              <li key={`c${c.id}`} className="changed">
                ~ {c.id}: {c.keys.join(", ")}
              </li>
            ))}
            {diff.edgesAdded.map((k) => (
              <li key={`ea${k}`} className="added">+ edge {k}</li>
            ))}
            {diff.edgesRemoved.map((k) => (
              <li key={`er${k}`} className="removed">− edge {k}</li>
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}
