/** Flow files (docs/protocol.md, "Flow files"): the canvas downloaded as a file, and what
 * an imported file brought (refused, cleared, left to fix). */
import type { Graph } from "../lib/graph";

export type ImportReport = {
  lands_as?: "version" | "draft";
  refused: { node_id: string | null; component: string | null; reason: string }[];
  cleared: { node_id: string | null; param: string; reason: string }[];
  problems: { node_id?: string | null; message: string }[];
  notes: string[];
  graph?: unknown;
  name?: string;
};

export function fileName(name: string): string {
  const stem = name.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-+|-+$/g, "").toLowerCase().slice(0, 60) || "flow";
  return `${stem}.flowdeck.json`;
}

/** Download `graph` as a flow file (the same envelope the server's export writes). */
export function exportFlowFile(name: string, description: string, graph: Graph): void {
  const document_ = {
    format: "flowdeck.flow",
    format_version: 1,
    name,
    description,
    graph,
    exported_at: new Date().toISOString(),
  };
  const blob = new Blob([JSON.stringify(document_, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = fileName(name);
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function ImportReportDialog({ report, onClose }: { report: ImportReport; onClose: () => void }) {
  const refused = report.refused.length > 0;
  return (
    <div className="dialog-backdrop" onKeyDown={(e) => e.key === "Escape" && onClose()}>
      <div className="dialog" role="alertdialog" aria-modal="true" aria-label="Import" data-testid="import-report">
        <h2>{refused ? "The file was not imported" : "The file is on the canvas"}</h2>
        {refused ? (
          <>
            <ul className="list">
              {report.refused.map((r, i) => (
                <li key={i}>{r.reason}</li>
              ))}
            </ul>
            <p className="muted">Nothing changed on the canvas.</p>
          </>
        ) : (
          <>
            <p>It is your draft now: check it, then save a version. The flow keeps its own name.</p>
            {report.cleared.length > 0 && (
              <>
                <h3>Cleared</h3>
                <ul className="list">
                  {report.cleared.map((c, i) => (
                    <li key={i}>
                      {c.param} of <code>{c.node_id}</code>: {c.reason}
                    </li>
                  ))}
                </ul>
              </>
            )}
            {report.problems.length > 0 && (
              <>
                <h3>To fix</h3>
                <ul className="list">
                  {report.problems.map((p, i) => (
                    <li key={i}>
                      {p.node_id ? <code>{p.node_id}</code> : null} {p.message}
                    </li>
                  ))}
                </ul>
              </>
            )}
            {report.notes.map((n, i) => (
              <p key={i} className="muted">
                {n}
              </p>
            ))}
          </>
        )}
        <div className="buttons">
          <button type="button" onClick={onClose} data-testid="import-close" autoFocus>
            OK
          </button>
        </div>
      </div>
    </div>
  );
}
