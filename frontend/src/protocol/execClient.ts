/**
 * The one client of the execution WebSocket protocol (docs/protocol.md).
 *
 * Everything that talks to `/ws/w/<slug>/exec` goes through this module: the editor's run
 * panel, the run page and (later) replay. It owns the session id, reconnects with
 * exponential backoff, re-sends `resume` from the last seq held for every followed run,
 * and hands each run event to listeners exactly once and in order (dedupe by seq).
 */

export type RunEvent = {
  event: string;
  run_id: string;
  seq: number;
  node_id: string | null;
  ts: string;
  data?: unknown;
  message?: string;
  status?: string;
  duration_ms?: number;
  [key: string]: unknown;
};

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export type Rejection = { code: string; message: string; problems?: unknown[]; request_id?: string };

export class RunRejected extends Error {
  constructor(public readonly rejection: Rejection) {
    super(rejection.message);
  }
}

type Follow = { lastSeq: number; finished: boolean };

type Pending = {
  requestId: string;
  resolve: (runId: string) => void;
  reject: (err: Error) => void;
};

export type ExecClientOptions = {
  /** Absolute ws(s):// URL of the endpoint, without the query string. */
  url: string;
  session?: string;
  minDelayMs?: number;
  maxDelayMs?: number;
};

type EventListener = (event: RunEvent) => void;
type StateListener = (state: ConnectionState, info: { attempt: number; session: string | null }) => void;

export function execUrl(wsPath: string, loc: Location = window.location): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}${wsPath}`;
}

export class ExecClient {
  private socket: WebSocket | null = null;
  private session: string | null;
  private follows = new Map<string, Follow>();
  private pending: Pending[] = [];
  private eventListeners = new Set<EventListener>();
  private stateListeners = new Set<StateListener>();
  private rejectionListeners = new Set<(r: Rejection) => void>();
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private reauthorising = false;
  private requests = 0;
  private outbox: string[] = [];
  private replayListeners = new Set<(event: RunEvent) => void>();
  private replaying: {
    runId: string;
    speed: number | "instant";
    id: number | null;
    lastSeq: number;
    finished: boolean;
  } | null = null;
  state: ConnectionState = "closed";

  constructor(private readonly options: ExecClientOptions) {
    this.session = options.session ?? null;
  }

  get sessionId(): string | null {
    return this.session;
  }

  /** The last seq delivered for `runId` (0 when nothing was). */
  lastSeq(runId: string): number {
    return this.follows.get(runId)?.lastSeq ?? 0;
  }

  onEvent(listener: EventListener): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  onState(listener: StateListener): () => void {
    this.stateListeners.add(listener);
    listener(this.state, { attempt: this.attempt, session: this.session });
    return () => this.stateListeners.delete(listener);
  }

  onRejected(listener: (r: Rejection) => void): () => void {
    this.rejectionListeners.add(listener);
    return () => this.rejectionListeners.delete(listener);
  }

  connect(): void {
    this.stopped = false;
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) return;
    this.open();
  }

  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.socket?.close(1000);
    this.socket = null;
    this.setState("closed");
  }

  /**
   * Start a run: a saved flow (`{flow, version?}`) or an unsaved draft graph
   * (`{graph}`, sent as a bare graph frame with its flow id). Resolves with the run id
   * once the server accepted it; rejects with RunRejected when it refused.
   */
  run(request: {
    flow?: number;
    version?: number;
    graph?: { nodes: unknown[]; edges: unknown[] };
    inputs: Record<string, string>;
    /** A conversation id: the run is its next turn (the playground). */
    conversation?: string;
  }): Promise<string> {
    const frame = request.graph
      ? { ...request.graph, flow: request.flow, inputs: request.inputs }
      : {
          action: "run",
          flow: request.flow,
          version: request.version,
          inputs: request.inputs,
          ...(request.conversation ? { conversation: request.conversation } : {}),
        };
    return this.start(frame);
  }

  /** Run a finished run again (same version and inputs), optionally from one node onwards. */
  rerun(runId: string, fromNode?: string): Promise<string> {
    return this.start({ action: "rerun", run_id: runId, ...(fromNode ? { from_node: fromNode } : {}) });
  }

  /**
   * Play a finished run back from its log (`speed`: 0.1-100 or "instant"). Replayed events
   * go to onReplay listeners, never to the live ones, so they cannot be taken for duplicates.
   * A dropped connection continues the replay from the last event held.
   */
  replay(runId: string, speed: number | "instant" = 1, fromSeq = 0): void {
    // A seek is a replay that sends everything up to `fromSeq` at once, then plays on.
    this.replaying = { runId, speed, id: null, lastSeq: 0, finished: false };
    this.send({ action: "replay", run_id: runId, speed, from_seq: fromSeq });
  }

  replayPause(): void {
    if (this.replaying) this.send({ action: "replay_pause" });
  }

  replayPlay(): void {
    if (this.replaying) this.send({ action: "replay_play" });
  }

  onReplay(listener: (event: RunEvent) => void): () => void {
    this.replayListeners.add(listener);
    return () => this.replayListeners.delete(listener);
  }

  private start(frame: Record<string, unknown>): Promise<string> {
    // Replies carry the request_id back, so each is matched to its own request, not by order.
    const requestId = this.nextRequestId();
    return new Promise<string>((resolve, reject) => {
      this.pending.push({ requestId, resolve, reject });
      this.send({ ...frame, request_id: requestId });
    });
  }

  private nextRequestId(): string {
    this.requests += 1;
    return `r${this.requests}`;
  }

  /** The pending start a reply answers: by its request_id (any server that echoes one). */
  private takePending(frame: Record<string, unknown>): Pending | undefined {
    const id = frame.request_id;
    if (typeof id !== "string") return undefined;
    const index = this.pending.findIndex((p) => p.requestId === id);
    return index < 0 ? undefined : this.pending.splice(index, 1)[0];
  }

  /** Follow a run from `afterSeq` (0: from the start); later resumes continue from what is held. */
  resume(runId: string, afterSeq = 0): void {
    const follow = this.follows.get(runId);
    if (!follow) this.follows.set(runId, { lastSeq: afterSeq, finished: false });
    else follow.finished = false;
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ action: "resume", run_id: runId, after_seq: this.lastSeq(runId) }));
    } else {
      this.connect(); // the open handler resumes every followed run
    }
  }

  cancel(runId: string): void {
    this.send({ action: "cancel", run_id: runId, request_id: this.nextRequestId() });
  }

  /** Decide a run's waiting approval; a refusal comes to onRejected listeners. */
  decide(
    runId: string,
    nodeId: string,
    decision: "approve" | "reject",
    comment: string,
    value?: unknown,
  ): void {
    this.send({
      action: "decide",
      run_id: runId,
      node_id: nodeId,
      decision,
      comment,
      ...(value === undefined ? {} : { value }),
      request_id: this.nextRequestId(),
    });
  }

  private send(frame: unknown): void {
    const text = JSON.stringify(frame);
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(text);
    } else {
      this.outbox.push(text);
      this.connect();
    }
  }

  private open(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const query = this.session ? `?session=${encodeURIComponent(this.session)}` : "";
    const socket = new WebSocket(this.options.url + query);
    this.socket = socket;
    socket.onopen = () => {
      if (socket !== this.socket) return;
      this.attempt = 0;
      this.setState("open");
      // Resume first, so what was missed arrives before anything new is asked for.
      for (const [runId, follow] of this.follows) {
        if (!follow.finished) {
          socket.send(JSON.stringify({ action: "resume", run_id: runId, after_seq: follow.lastSeq }));
        }
      }
      const r = this.replaying;
      if (r && !r.finished) {
        r.id = null; // the old replay ended with its connection: ask for the rest
        socket.send(JSON.stringify({ action: "replay", run_id: r.runId, speed: r.speed, from_seq: r.lastSeq }));
        this.outbox = this.outbox.filter((text) => !text.includes('"action":"replay'));
      }
      const outbox = this.outbox;
      this.outbox = [];
      for (const text of outbox) socket.send(text);
    };
    socket.onmessage = (message) => {
      if (socket !== this.socket) return;
      let frame: Record<string, unknown>;
      try {
        frame = JSON.parse(String(message.data));
      } catch {
        return;
      }
      this.handle(frame);
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      // A run frame sent but not yet answered may or may not have started: say so.
      const pending = this.pending;
      this.pending = [];
      for (const p of pending) p.reject(new Error("The connection dropped before the run was accepted."));
      if (this.stopped) {
        this.setState("closed");
        return;
      }
      if (event.code === 4401 || this.reauthorising) {
        // The credential this socket opened with no longer grants access. A browser that
        // changed its own password holds a re-keyed session cookie and is still signed in:
        // one immediate retry with the cookie it has now resumes exactly; a refused retry
        // (signed out, revoked) ends the client.
        if (this.reauthorising) {
          this.reauthorising = false;
          this.setState("closed");
          return;
        }
        this.reauthorising = true;
        this.open();
        return;
      }
      this.scheduleReconnect();
    };
    socket.onerror = () => {
      /* onclose follows and schedules the reconnect */
    };
  }

  private scheduleReconnect(): void {
    this.attempt += 1;
    const min = this.options.minDelayMs ?? 250;
    const max = this.options.maxDelayMs ?? 8000;
    const base = Math.min(max, min * 2 ** (this.attempt - 1));
    const delay = base / 2 + Math.random() * (base / 2);
    this.setState("reconnecting");
    this.timer = setTimeout(() => this.open(), delay);
  }

  private handle(frame: Record<string, unknown>): void {
    const kind = frame.event;
    if (kind === "session") {
      this.reauthorising = false;
      this.session = String(frame.session_id);
      this.setState(this.state);
      return;
    }
    if (kind === "accepted") {
      const runId = String(frame.run_id);
      if (!this.follows.has(runId)) this.follows.set(runId, { lastSeq: 0, finished: false });
      this.takePending(frame)?.resolve(runId);
      return;
    }
    if (kind === "rejected") {
      const rejection = frame as unknown as Rejection;
      const pending = this.takePending(frame);
      if (pending) pending.reject(new RunRejected(rejection));
      for (const listener of this.rejectionListeners) listener(rejection);
      return;
    }
    if (kind === "replay_started" || kind === "replay_finished" || frame.replay !== undefined) {
      this.handleReplay(frame);
      return;
    }
    if (typeof frame.seq !== "number" || typeof frame.run_id !== "string") return;
    const event = frame as unknown as RunEvent;
    let follow = this.follows.get(event.run_id);
    if (!follow) {
      // A run of this session started elsewhere (another tab): follow it from its start.
      if (event.seq !== 1) return;
      follow = { lastSeq: 0, finished: false };
      this.follows.set(event.run_id, follow);
    }
    if (event.seq <= follow.lastSeq) return; // already delivered
    if (event.seq > follow.lastSeq + 1) {
      // A gap: ask for what is missing rather than deliver out of order.
      this.send({ action: "resume", run_id: event.run_id, after_seq: follow.lastSeq });
      return;
    }
    follow.lastSeq = event.seq;
    if (event.event === "completed") follow.finished = true;
    for (const listener of this.eventListeners) listener(event);
  }

  private handleReplay(frame: Record<string, unknown>): void {
    const r = this.replaying;
    if (!r || frame.run_id !== r.runId) return;
    if (frame.event === "replay_started") {
      r.id = Number(frame.replay);
    } else if (r.id === null || Number(frame.replay) !== r.id) {
      return; // a replay this client no longer follows
    }
    if (frame.event === "replay_finished") r.finished = true;
    if (typeof frame.seq === "number") {
      if (frame.seq <= r.lastSeq) return;
      r.lastSeq = frame.seq;
    }
    for (const listener of this.replayListeners) listener(frame as unknown as RunEvent);
  }

  private setState(state: ConnectionState): void {
    this.state = state;
    for (const listener of this.stateListeners) {
      listener(state, { attempt: this.attempt, session: this.session });
    }
  }
}
