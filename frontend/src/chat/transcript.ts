/**
 * The playground's transcript, folded from the conversation's recorded turns (the chat
 * API) and the run being followed now (the run store): one user message and one answer
 * per turn, in order. The live run replaces its recorded turn once the list is reloaded,
 * so a turn is never shown twice.
 */
import { outputText, type Retrieval, type RunSnapshot, type ToolCall } from "../run/runStore";

/** One turn as the chat API lists it (`GET conversations/<id>`: `turn_list`). */
export type RecordedTurn = {
  number: number;
  run_id: string;
  status: string;
  inputs: unknown;
  outputs: unknown;
  answer: string | null;
  error: string;
};

export type ChatMessage =
  | { role: "user"; key: string; runId: string | null; text: string }
  | {
      role: "assistant";
      key: string;
      runId: string | null;
      text: string;
      status: string; // starting | running | success | error | cancelled | a recorded status
      streaming: boolean;
      toolCalls: ToolCall[];
      retrievals: Retrieval[];
      error: string;
    };

export type LiveTurn = { inputs: Record<string, string>; snapshot: RunSnapshot };

/** What the user said: the one input's text, or each input's as "name: text". */
export function inputsText(inputs: unknown): string {
  if (typeof inputs === "string") return inputs;
  if (!inputs || typeof inputs !== "object") return "";
  const entries = Object.entries(inputs as Record<string, unknown>);
  if (entries.length === 1) return outputText(entries[0][1]);
  return entries.map(([k, v]) => `${k}: ${outputText(v)}`).join("\n");
}

/** The answer of a finished run: its outputs' text (one output: just its text). */
export function outputsText(outputs: unknown): string {
  if (!outputs || typeof outputs !== "object") return outputText(outputs);
  const values = Object.values(outputs as Record<string, unknown>);
  return values.map((v) => outputText(v)).join("\n\n");
}

/** The answer so far: the streamed text of the node streaming last, as far as the
 * typewriter revealed it (once the run ended and it caught up: all of it, exactly what
 * came over the socket); a run that streamed nothing answers with its outputs. */
export function liveAnswer(s: RunSnapshot): { text: string; streaming: boolean } {
  const streamer = [...s.order].reverse().map((id) => s.nodes[id]).find((n) => n && n.text);
  const ended = s.status === "success" || s.status === "error" || s.status === "cancelled";
  if (streamer) {
    return { text: streamer.text.slice(0, streamer.shown), streaming: !ended || streamer.shown < streamer.text.length };
  }
  if (ended) return { text: outputsText(s.outputs), streaming: false };
  return { text: "", streaming: true };
}

/** A recorded run's status in the run store's words, so both kinds of answer read alike. */
const RECORDED_STATUS: Record<string, string> = { succeeded: "success", failed: "error", queued: "starting" };

function recordedAnswer(turn: RecordedTurn): string {
  if (turn.answer !== null && turn.answer !== undefined) return turn.answer;
  return turn.outputs && typeof turn.outputs === "object" && Object.keys(turn.outputs).length
    ? outputsText(turn.outputs)
    : "";
}

export function foldTranscript(recorded: RecordedTurn[], live: LiveTurn | null): ChatMessage[] {
  const messages: ChatMessage[] = [];
  const liveId = live?.snapshot.runId ?? null;
  const liveMessage = (): ChatMessage => {
    const s = live!.snapshot;
    const answer = liveAnswer(s);
    return {
      role: "assistant",
      key: `a-${liveId ?? "starting"}`,
      runId: liveId,
      text: answer.text,
      status: s.status,
      streaming: answer.streaming,
      toolCalls: s.toolCalls,
      retrievals: s.retrievals,
      error: s.errors.map((e) => e.message).join("\n"),
    };
  };
  let liveShown = false;
  for (const turn of [...recorded].sort((a, b) => a.number - b.number)) {
    messages.push({ role: "user", key: `u-${turn.run_id}`, runId: turn.run_id, text: inputsText(turn.inputs) });
    if (live && liveId === turn.run_id) {
      messages.push(liveMessage());
      liveShown = true;
    } else {
      messages.push({
        role: "assistant",
        key: `a-${turn.run_id}`,
        runId: turn.run_id,
        text: recordedAnswer(turn),
        status: RECORDED_STATUS[turn.status] ?? turn.status,
        streaming: false,
        toolCalls: [],
        retrievals: [],
        error: turn.error,
      });
    }
  }
  if (live && !liveShown && live.snapshot.status !== "idle") {
    messages.push({ role: "user", key: `u-${liveId ?? "starting"}`, runId: liveId, text: inputsText(live.inputs) });
    messages.push(liveMessage());
  }
  return messages;
}

/** The last thing the user said (what Regenerate sends again). */
export function lastUserInputs(recorded: RecordedTurn[], live: LiveTurn | null): Record<string, string> | null {
  if (live && live.snapshot.status !== "idle") return live.inputs;
  const last = [...recorded].sort((a, b) => b.number - a.number)[0];
  if (!last || !last.inputs || typeof last.inputs !== "object") return null;
  return Object.fromEntries(Object.entries(last.inputs as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
}
