/**
 * One answer of the embedded chat as its events arrive (chat/embed_views.py sends them):
 * tokens of the node that streams first, the sources, the end. Each event carries the run's
 * seq; an EventSource that reconnects resumes after the last one it saw (Last-Event-ID), and
 * anything at or before `seq` is ignored, so a resumed answer never repeats a piece.
 */
export interface Source {
  title: string;
  page: number | null;
  excerpt: string;
}

export type VisitorEvent =
  | { event: "token"; seq: number; node: string; text: string }
  | { event: "sources"; seq: number; hits: Source[] }
  | { event: "done"; seq: number; status: string; answer?: string; error?: string | null };

export interface Answer {
  seq: number;
  node: string | null;
  text: string;
  sources: Source[];
  done: boolean;
  status: string | null;
  error: string | null;
}

export function emptyAnswer(): Answer {
  return { seq: 0, node: null, text: "", sources: [], done: false, status: null, error: null };
}

export function applyEvent(answer: Answer, event: VisitorEvent): Answer {
  if (answer.done || event.seq <= answer.seq) return answer;
  const next = { ...answer, seq: event.seq };
  switch (event.event) {
    case "token":
      if (next.node !== null && next.node !== event.node) return next; // another branch's
      return { ...next, node: event.node, text: next.text + event.text };
    case "sources":
      return { ...next, sources: [...next.sources, ...event.hits] };
    case "done": {
      // The run's outputs hold the whole answer: it wins where the tokens fell short (a
      // node that does not stream fed the answer).
      const final = event.answer ?? "";
      const text = final.length >= next.text.length ? final || next.text : next.text;
      return { ...next, text, done: true, status: event.status, error: event.error ?? null };
    }
  }
  return next;
}
