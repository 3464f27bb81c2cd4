import { useState } from "react";
import type { Component } from "../lib/graph";
import { formatTime } from "../lib/format";

export type VersionInfo = {
  number: number;
  note: string;
  created_at: string;
  created_by: string | null;
  is_draft: boolean;
};

/** What changed between two versions: `GET flows/<id>/diff` (flows/diff.py on the server,
 * the one reading of a version diff; values are JSON text). */
export type VersionDiff = {
  a: number;
  b: number;
  added: string[];
  removed: string[];
  changed: { node_id: string; changes: { key: string; before: string | null; after: string | null }[] }[];
  edges_added: string[];
  edges_removed: string[];
  components: Record<string, string>;
};

function isEmpty(d: VersionDiff): boolean {
  return d.added.length + d.removed.length + d.changed.length + d.edges_added.length + d.edges_removed.length === 0;
}

/** Version history: load one onto the canvas, or compare two. */
export function VersionsPanel({
  versions,
  current,
  onLoad,
  fetchDiff,
  catalog,
}: {
  versions: VersionInfo[];
  current: number | null;
  onLoad: (n: number) => Promise<void>;
  fetchDiff: (a: number, b: number) => Promise<VersionDiff>;
  catalog: Map<string, Component>;
}) {
  const sorted = [...versions].sort((x, y) => y.number - x.number);
  const [left, setLeft] = useState<number | "">(sorted[1]?.number ?? "");
  const [right, setRight] = useState<number | "">(sorted[0]?.number ?? "");
  const [diff, setDiff] = useState<VersionDiff | null>(null);
  const [error, setError] = useState<string | null>(null);
  const label = (id: string) => {
    const key = diff?.components[id];
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
              setDiff(await fetchDiff(left, right));
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
          {isEmpty(diff) && <p>No differences.</p>}
          <ul>
            {diff.added.map((id) => (
              <li key={`a${id}`} className="added">+ node {label(id)}</li>
            ))}
            {diff.removed.map((id) => (
              <li key={`r${id}`} className="removed">− node {label(id)}</li>
            ))}
            {diff.changed.flatMap((node) =>
              node.changes.map((c) => (
                <li key={`c${node.node_id}.${c.key}`} className="changed">
                  ~ {node.node_id}: {c.key} <code>{c.before ?? "(not set)"}</code> → <code>{c.after ?? "(not set)"}</code>
                </li>
              )),
            )}
            {diff.edges_added.map((k) => (
              <li key={`ea${k}`} className="added">+ edge {k}</li>
            ))}
            {diff.edges_removed.map((k) => (
              <li key={`er${k}`} className="removed">− edge {k}</li>
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}
