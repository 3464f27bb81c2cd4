// The protocol client against a scripted socket: replies matched by request_id, events
// delivered once and in order, a gap answered by a resume, reconnects backing off, and the
// one retry after 4401.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { ExecClient, RunRejected, type RunEvent } from "./execClient";

type Frame = Record<string, unknown>;

class FakeSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  static all: FakeSocket[] = [];

  readyState = FakeSocket.CONNECTING;
  sent: Frame[] = [];
  onopen: ((e: unknown) => void) | null = null;
  onmessage: ((e: { data: string }) => void) | null = null;
  onclose: ((e: { code: number }) => void) | null = null;
  onerror: ((e: unknown) => void) | null = null;

  constructor(public readonly url: string) {
    FakeSocket.all.push(this);
  }

  send(text: string): void {
    this.sent.push(JSON.parse(text) as Frame);
  }

  close(code = 1000): void {
    this.end(code);
  }

  // --- what the server does ---
  accept(session = "s1"): void {
    this.readyState = FakeSocket.OPEN;
    this.onopen?.({});
    this.reply({ event: "session", session_id: session });
  }

  reply(frame: Frame): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  end(code: number): void {
    if (this.readyState === FakeSocket.CLOSED) return;
    this.readyState = FakeSocket.CLOSED;
    this.onclose?.({ code });
  }
}

const latest = (): FakeSocket => FakeSocket.all[FakeSocket.all.length - 1];
const event = (seq: number, extra: Frame = {}): Frame => ({
  event: "on_token",
  run_id: "run-1",
  seq,
  node_id: "m",
  ts: "t",
  data: `tok${seq}`,
  ...extra,
});

function connected(): ExecClient {
  const client = new ExecClient({ url: "ws://test/ws/w/acme/exec", minDelayMs: 10, maxDelayMs: 20 });
  client.connect();
  latest().accept();
  return client;
}

beforeEach(() => {
  FakeSocket.all = [];
  vi.stubGlobal("WebSocket", FakeSocket);
  vi.useFakeTimers();
});

afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("replies", () => {
  it("are matched to their request by request_id, not by order", async () => {
    const client = connected();
    const first = client.run({ flow: 1, inputs: { input: "a" } });
    const second = client.run({ flow: 2, inputs: { input: "b" } });
    const [a, b] = latest().sent.slice(-2);
    expect(a.request_id).not.toEqual(b.request_id);
    latest().reply({ event: "rejected", code: "not_found", message: "No such flow.", request_id: b.request_id });
    latest().reply({ event: "accepted", run_id: "run-1", session_id: "s1", request_id: a.request_id });
    await expect(first).resolves.toBe("run-1");
    await expect(second).rejects.toBeInstanceOf(RunRejected);
  });

  it("a refused cancel does not fail a pending run", async () => {
    const client = connected();
    const started = client.run({ flow: 1, inputs: {} });
    const runFrame = latest().sent[latest().sent.length - 1];
    client.cancel("other-run");
    const cancelFrame = latest().sent[latest().sent.length - 1];
    expect(cancelFrame.action).toBe("cancel");
    latest().reply({ event: "rejected", code: "not_found", message: "No such run.", request_id: cancelFrame.request_id });
    latest().reply({ event: "accepted", run_id: "run-9", session_id: "s1", request_id: runFrame.request_id });
    await expect(started).resolves.toBe("run-9");
  });
});

describe("events", () => {
  it("are delivered once and in order, and a gap asks for a resume", async () => {
    const client = connected();
    const seen: number[] = [];
    client.onEvent((e: RunEvent) => seen.push(e.seq));
    client.resume("run-1", 0);
    latest().reply(event(1));
    latest().reply(event(1)); // a duplicate (a fill racing the live stream)
    latest().reply(event(3)); // 2 is missing: not delivered out of order
    expect(seen).toEqual([1]);
    expect(latest().sent[latest().sent.length - 1]).toEqual({ action: "resume", run_id: "run-1", after_seq: 1 });
    latest().reply(event(2));
    latest().reply(event(3));
    expect(seen).toEqual([1, 2, 3]);
  });

  it("a reconnect resumes every followed run from the last seq held", () => {
    const client = connected();
    client.resume("run-1", 0);
    latest().reply(event(1));
    latest().reply(event(2));
    latest().end(1006);
    vi.advanceTimersByTime(50);
    latest().accept();
    expect(latest().sent).toContainEqual({ action: "resume", run_id: "run-1", after_seq: 2 });
    expect(client.state).toBe("open");
  });
});

describe("reconnect backoff", () => {
  // The longest wait each attempt may take (Math.random pinned just under 1): the delay
  // doubles from minDelayMs per failed attempt, is capped at maxDelayMs, and starts over
  // once a socket opens.
  function reconnectsAfter(ms: number): boolean {
    const before = FakeSocket.all.length;
    vi.advanceTimersByTime(ms);
    return FakeSocket.all.length > before;
  }

  it("doubles per failed attempt up to the cap and starts over after an open", () => {
    vi.spyOn(Math, "random").mockReturnValue(0.999);
    const client = new ExecClient({ url: "ws://test/ws/w/acme/exec", minDelayMs: 100, maxDelayMs: 400 });
    client.connect();
    latest().accept();

    const waits: number[] = [];
    for (let attempt = 0; attempt < 4; attempt += 1) {
      latest().end(1006); // the server went away, or the handshake failed
      expect(client.state).toBe("reconnecting");
      let waited = 0;
      while (!reconnectsAfter(10)) waited += 10;
      waits.push(waited + 10);
    }
    // base/2 + random*base/2 with random ~1: about 100, 200, 400, then capped at 400.
    expect(waits).toEqual([100, 200, 400, 400]);

    latest().accept(); // an open resets the schedule
    latest().end(1006);
    let waited = 0;
    while (!reconnectsAfter(10)) waited += 10;
    expect(waited + 10).toBe(100);
    client.close();
  });

  it("waits at least half the base delay (jitter never reconnects at once)", () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const client = new ExecClient({ url: "ws://test/ws/w/acme/exec", minDelayMs: 100, maxDelayMs: 400 });
    client.connect();
    latest().accept();
    latest().end(1006);
    expect(reconnectsAfter(49)).toBe(false);
    expect(reconnectsAfter(1)).toBe(true);
    client.close();
  });
});

describe("4401", () => {
  it("is retried once at once with the cookie the browser now holds", () => {
    const client = connected();
    client.resume("run-1", 0);
    latest().reply(event(1));
    latest().end(4401); // its own password change re-keyed the session
    expect(FakeSocket.all).toHaveLength(2); // no backoff: immediately
    latest().accept();
    expect(client.state).toBe("open");
    expect(latest().sent).toContainEqual({ action: "resume", run_id: "run-1", after_seq: 1 });
  });

  it("ends the client when the retry is refused too", () => {
    const client = connected();
    latest().end(4401);
    latest().end(1006); // the handshake was refused: signed out for good
    expect(client.state).toBe("closed");
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(2); // and it does not keep trying
  });
});
