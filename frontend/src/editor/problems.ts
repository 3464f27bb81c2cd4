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

/** Messages per node id; problems about the whole graph are under "". The server's
 * messages are sentences that name the field already (flows/messages.py), so the machine
 * field (`params.x`) is never shown. */
export function problemsByNode(problems: Problem[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const p of problems) {
    if (!p || typeof p !== "object") continue;
    const id = p.node_id ?? p.node ?? "";
    const text = String(p.message ?? p.code ?? "This is not valid.");
    const list = (out[id] ??= []);
    if (!list.includes(text)) list.push(text);
  }
  return out;
}
