/**
 * What a run looks like to the UI, folded from its events.
 *
 * Events are applied as they arrive (cheap), but subscribers are told at most once per
 * animation frame, however fast tokens come in. Streamed text is revealed by a typewriter:
 * each frame shows a few more characters of what was received, catching up faster when
 * the backlog grows, so the screen never falls far behind and never repaints per token.
 */
import type { RunEvent } from "../protocol/execClient";

export type NodeStatus = "queued" | "running" | "waiting" | "done" | "error" | "skipped";

/** A human approval the run waits for (`waiting_for_approval`), and its decision once made
 * (`approval_decided`). */
export type ApprovalAsk = {
  node_id: string;
  prompt: string;
  value: unknown;
  role: string;
  allow_edit: boolean;
  timeout_at: string | null;
  seq: number;
  decided?: { decision: string; by: string | null; comment: string; edited: boolean; timed_out: boolean };
};

export type ToolCall = {
  call_id: string;
  node_id: string | null;
  tool_name: string;
  tool_input: unknown;
  output?: unknown;
  seq: number;
};

/** One passage a retriever cited (the `on_retrieval` event's hit). */
export type Citation = {
  id: unknown;
  title: string;
  score: number;
  document?: string;
  document_id?: unknown;
  page?: number | null;
  chunk?: number | null;
  excerpt?: string;
};

export type Retrieval = {
  node_id: string | null;
  query: string;
  mode?: string;
  used?: string;
  notes: string[];
  hits: Citation[];
  seq: number;
};

/** A `node_retry`: an attempt failed and the node's policy tries again after `delay` s. */
export type Retry = { attempt: number; of: number; error: string; code: string; delay: number; seq: number };

export type NodeRun = {
  status: NodeStatus;
  component?: string;
  text: string; // the current attempt's streamed chunks, concatenated
  shown: number; // how many characters of `text` the typewriter reveals
  retries?: Retry[]; // each retry, in order (the failed attempts' text is not in `text`)
  took?: "error_port" | "fallback"; // the node failed and its policy went on this way
  failure?: { message: string; code: string };
  pinnedFrom?: string; // the run whose recorded output this pinned node reused
  output?: unknown;
  error?: string;
  durationMs?: number;
  startedAt?: number;
  progress?: { done: number; total: number; failed: number }; // an iteration's items
};

export type RunSnapshot = {
  runId: string | null;
  status: "idle" | "starting" | "running" | "waiting" | "success" | "error" | "cancelled";
  lastSeq: number;
  nodes: Record<string, NodeRun>;
  order: string[]; // node ids in the order they started
  toolCalls: ToolCall[];
  retrievals: Retrieval[]; // what retrievers cited, in order (shown under the answer)
  errors: { node_id: string | null; message: string; seq: number }[];
  approvals: ApprovalAsk[]; // what the run asked people to decide, in order
  outputs: Record<string, unknown>;
  startedTs?: string;
  finishedTs?: string;
  typing: boolean; // the typewriter still has text to reveal
};

export function emptySnapshot(): RunSnapshot {
  return {
    runId: null,
    status: "idle",
    lastSeq: 0,
    nodes: {},
    order: [],
    toolCalls: [],
    retrievals: [],
    errors: [],
    approvals: [],
    outputs: {},
    typing: false,
  };
}

export function outputText(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  if (typeof value === "object") {
    const v = value as Record<string, unknown>;
    for (const key of ["text", "content", "output"]) {
      if (typeof v[key] === "string") return v[key] as string;
    }
  }
  return JSON.stringify(value, null, 2);
}

/** Why an attempt failed, briefly: the provider's HTTP status, or the kind of failure. */
export function failureReason(error: string, code: string): string {
  const status = /HTTP (\d{3})/.exec(error);
  if (status) return status[1];
  if (code === "timeout") return "a timeout";
  if (code === "connection") return "a connection error";
  return code || "an error";
}

/** "attempt 2 of 3 after 503": the marker a retried node shows. */
export function retryLabel(r: Retry): string {
  return `attempt ${r.attempt} of ${r.of} after ${failureReason(r.error, r.code)}`;
}

/** Apply one event to a snapshot in place. */
export function applyEvent(s: RunSnapshot, e: RunEvent, queuedNodes: string[] = []): void {
  s.lastSeq = e.seq;
  s.runId = e.run_id;
  const nodeId = e.node_id ?? null;
  const node = (): NodeRun => {
    const id = nodeId ?? "";
    if (!s.nodes[id]) s.nodes[id] = { status: "queued", text: "", shown: 0 };
    if (!s.order.includes(id)) s.order.push(id);
    return s.nodes[id];
  };
  switch (e.event) {
    case "run_started":
      s.status = "running";
      s.startedTs = e.ts;
      for (const id of queuedNodes) {
        if (!s.nodes[id]) s.nodes[id] = { status: "queued", text: "", shown: 0 };
      }
      break;
    case "node_started": {
      const n = node();
      n.status = "running";
      n.startedAt = Date.parse(e.ts);
      const data = e.data as { component?: string } | undefined;
      if (data?.component) n.component = data.component;
      break;
    }
    case "on_token": {
      const n = node();
      if (n.status === "queued") n.status = "running";
      n.text += typeof e.data === "string" ? e.data : outputText(e.data);
      break;
    }
    case "on_tool_call": {
      const d = (e.data ?? {}) as Partial<ToolCall>;
      s.toolCalls.push({
        call_id: String(d.call_id ?? e.seq),
        node_id: nodeId,
        tool_name: String(d.tool_name ?? "tool"),
        tool_input: d.tool_input,
        seq: e.seq,
      });
      break;
    }
    case "on_tool_result": {
      const d = (e.data ?? {}) as { call_id?: string; output?: unknown; tool_name?: string };
      const call = s.toolCalls.find((c) => c.call_id === String(d.call_id));
      if (call) call.output = d.output ?? d;
      else
        s.toolCalls.push({
          call_id: String(d.call_id ?? e.seq),
          node_id: nodeId,
          tool_name: String(d.tool_name ?? "tool"),
          tool_input: undefined,
          output: d.output ?? d,
          seq: e.seq,
        });
      break;
    }
    case "on_retrieval": {
      const d = (e.data ?? {}) as Partial<Retrieval> & { hits?: unknown };
      const hits = Array.isArray(d.hits) ? (d.hits as Citation[]) : [];
      s.retrievals.push({
        node_id: nodeId,
        query: String(d.query ?? ""),
        mode: d.mode,
        used: d.used,
        notes: Array.isArray(d.notes) ? d.notes.map(String) : [],
        hits: hits.map((h) => ({ ...h, title: String(h.title ?? h.document ?? ""), score: Number(h.score ?? 0) })),
        seq: e.seq,
      });
      break;
    }
    case "node_retry": {
      // A new attempt starts from nothing: its answer is never glued to the failed one's.
      const n = node();
      const d = e as unknown as Partial<Retry>;
      n.retries = [
        ...(n.retries ?? []),
        { attempt: Number(d.attempt ?? 0), of: Number(d.of ?? 0), error: String(d.error ?? ""), code: String(d.code ?? ""), delay: Number(d.delay ?? 0), seq: e.seq },
      ];
      n.text = "";
      n.shown = 0;
      break;
    }
    case "node_finished": {
      const n = node();
      n.status = e.skipped ? "skipped" : "done";
      n.output = e.data;
      if (typeof e.pinned_from === "string") n.pinnedFrom = e.pinned_from;
      if (e.took === "error_port" || e.took === "fallback") {
        // What the last, failed attempt streamed is not the node's output.
        n.text = "";
        n.shown = 0;
        n.took = e.took;
        const f = (e.failure ?? {}) as { message?: string; code?: string };
        n.failure = { message: String(f.message ?? ""), code: String(f.code ?? "") };
      }
      if (typeof e.duration_ms === "number") n.durationMs = e.duration_ms;
      else if (n.startedAt) n.durationMs = Date.parse(e.ts) - n.startedAt;
      break;
    }
    case "error":
    case "budget_exceeded": {
      // A budget that ran out stops its node like a failure, with its own message.
      const message = String(e.message ?? (e.data as { message?: string })?.message ?? "Error");
      s.errors.push({ node_id: nodeId, message, seq: e.seq });
      if (nodeId) {
        const n = node();
        n.status = "error";
        n.error = message;
        if (n.startedAt && n.durationMs === undefined) n.durationMs = Date.parse(e.ts) - n.startedAt;
      }
      break;
    }
    case "waiting_for_approval": {
      const d = (e.data ?? {}) as Partial<ApprovalAsk>;
      node().status = "waiting";
      s.status = "waiting";
      s.approvals.push({
        node_id: nodeId ?? "",
        prompt: String(d.prompt ?? ""),
        value: d.value,
        role: String(d.role ?? "editor"),
        allow_edit: Boolean(d.allow_edit),
        timeout_at: d.timeout_at ?? null,
        seq: e.seq,
      });
      break;
    }
    case "iteration_progress": {
      const d = (e.data ?? {}) as { done?: number; total?: number; failed?: number };
      node().progress = { done: Number(d.done ?? 0), total: Number(d.total ?? 0), failed: Number(d.failed ?? 0) };
      break;
    }
    case "run_resumed":
      s.status = "running";
      break;
    case "approval_decided": {
      const ask = s.approvals.find((a) => a.node_id === nodeId && !a.decided);
      if (ask) ask.decided = e.data as ApprovalAsk["decided"];
      node().status = "running";
      break;
    }
    case "completed": {
      const status = e.status === "success" || e.status === "cancelled" ? e.status : "error";
      s.status = status;
      s.finishedTs = e.ts;
      const outputs = (e.outputs ?? (e.data as { outputs?: unknown })?.outputs) as
        | Record<string, unknown>
        | undefined;
      if (outputs && typeof outputs === "object") s.outputs = outputs;
      break;
    }
    default:
      break;
  }
}

type Listener = () => void;

export class RunStore {
  private snapshot: RunSnapshot = emptySnapshot();
  private published: RunSnapshot = emptySnapshot();
  private listeners = new Set<Listener>();
  private frame: number | null = null;
  private queuedNodes: string[] = [];
  /** Frames painted since the last reset (for tests and the curious). */
  frames = 0;

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): RunSnapshot => this.published;

  reset(runId: string | null, status: RunSnapshot["status"], queuedNodes: string[] = []): void {
    this.snapshot = emptySnapshot();
    this.snapshot.runId = runId;
    this.snapshot.status = status;
    this.queuedNodes = queuedNodes;
    for (const id of queuedNodes) this.snapshot.nodes[id] = { status: "queued", text: "", shown: 0 };
    this.frames = 0;
    this.schedule();
  }

  setStatus(status: RunSnapshot["status"]): void {
    this.snapshot.status = status;
    this.schedule();
  }

  apply(event: RunEvent): void {
    if (this.snapshot.runId && event.run_id !== this.snapshot.runId) return;
    if (event.seq <= this.snapshot.lastSeq) return;
    applyEvent(this.snapshot, event, this.queuedNodes);
    this.schedule();
  }

  private schedule(): void {
    if (this.frame !== null) return;
    const raf = typeof requestAnimationFrame === "function" ? requestAnimationFrame : (cb: FrameRequestCallback) => setTimeout(() => cb(performance.now()), 16) as unknown as number;
    this.frame = raf(() => this.paint());
  }

  private paint(): void {
    this.frame = null;
    this.frames += 1;
    let typing = false;
    const nodes: Record<string, NodeRun> = {};
    for (const [id, n] of Object.entries(this.snapshot.nodes)) {
      const backlog = n.text.length - n.shown;
      if (backlog > 0) {
        n.shown += Math.max(2, Math.ceil(backlog / 8));
        if (n.shown > n.text.length) n.shown = n.text.length;
        if (n.shown < n.text.length) typing = true;
      }
      nodes[id] = { ...n };
    }
    this.snapshot.typing = typing;
    this.published = {
      ...this.snapshot,
      nodes,
      order: [...this.snapshot.order],
      toolCalls: this.snapshot.toolCalls.map((c) => ({ ...c })),
      errors: [...this.snapshot.errors],
      approvals: this.snapshot.approvals.map((a) => ({ ...a })),
    };
    for (const listener of this.listeners) listener();
    if (typing) this.schedule();
  }
}
