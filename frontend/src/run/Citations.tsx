import type { Retrieval } from "./runStore";

function scoreText(score: number | null): string {
  if (score === null) return "";
  return score >= 1 ? score.toFixed(2) : score.toFixed(3);
}

/** Where the answer came from: each retrieval node's hits (document, page, score), under
 * the answer. The excerpt is the hit's tooltip and, folded, its text. */
export function Citations({ retrievals }: { retrievals: Retrieval[] }) {
  if (!retrievals.length) return null;
  return (
    <section className="citations" aria-label="Sources" data-testid="citations">
      <h3>Sources</h3>
      {retrievals.map((r) => (
        <div key={r.seq} className="citation-group" data-testid={`citations-${r.node_id ?? "run"}`}>
          <p className="citation-query muted">
            {retrievals.length > 1 && r.node_id && <code>{r.node_id}</code>} “{r.query}”
            {r.used && ` · ${r.used}${r.mode && r.mode !== r.used ? ` (asked: ${r.mode})` : ""}`}
            {r.hits.length === 0 && " · nothing found"}
          </p>
          {r.hits.length > 0 && (
            <ol className="citation-list">
              {r.hits.map((h, i) => (
                <li key={i} data-testid="citation" title={h.excerpt}>
                  <span className="citation-doc">{h.document}</span>
                  {h.page !== null && <span className="citation-page">p. {h.page}</span>}
                  {h.heading && <span className="citation-heading">{h.heading}</span>}
                  {h.score !== null && <span className="citation-score">score {scoreText(h.score)}</span>}
                  {h.excerpt && (
                    <details className="citation-excerpt">
                      <summary>passage</summary>
                      <p>{h.excerpt}</p>
                    </details>
                  )}
                </li>
              ))}
            </ol>
          )}
        </div>
      ))}
    </section>
  );
}
