/** Validation problems (from `POST flows/validate`, a 400 on save, or a rejected run). */
export type Problem = {
  node_id?: string | null;
  node?: string | null;
  field?: string | null;
  param?: string | null;
  port?: string | null;
  code?: string;
  message: string;
};

/** Messages per node id; problems about the whole graph are under "". */
export function problemsByNode(problems: Problem[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const p of problems) {
    if (!p || typeof p !== "object") continue;
    const id = p.node_id ?? p.node ?? "";
    const where = p.field ?? p.param ?? p.port;
    const text = where ? `${where}: ${p.message}` : String(p.message ?? p.code ?? "invalid");
    (out[id] ??= []).push(text);
  }
  return out;
}
