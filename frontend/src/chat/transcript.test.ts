import { describe, expect, it } from "vitest";
import { emptySnapshot, type RunSnapshot } from "../run/runStore";
import { foldTranscript, lastUserInputs, liveAnswer, type RecordedTurn } from "./transcript";

const turn = (number: number, run_id: string, input: string, answer: string | null): RecordedTurn => ({
  number,
  run_id,
  status: "succeeded",
  inputs: { input },
  outputs: answer === null ? {} : { output: answer },
  answer,
  error: "",
});

function running(runId: string, text: string, shown = text.length): RunSnapshot {
  const s = emptySnapshot();
  s.runId = runId;
  s.status = "running";
  s.order = ["input", "model"];
  s.nodes = {
    input: { status: "done", text: "", shown: 0 },
    model: { status: "running", text, shown },
  };
  return s;
}

describe("foldTranscript", () => {
  it("lists recorded turns in order, a question then its answer", () => {
    const m = foldTranscript([turn(2, "r2", "second", "B"), turn(1, "r1", "first", "A")], null);
    expect(m[1]).toMatchObject({ status: "success", streaming: false });
    expect(m.map((x) => [x.role, x.text])).toEqual([
      ["user", "first"],
      ["assistant", "A"],
      ["user", "second"],
      ["assistant", "B"],
    ]);
  });

  it("appends the live turn, revealing only what the typewriter showed", () => {
    const m = foldTranscript([turn(1, "r1", "first", "A")], {
      inputs: { input: "next" },
      snapshot: running("r2", "Hello world", 5),
    });
    expect(m.slice(2).map((x) => [x.role, x.text])).toEqual([
      ["user", "next"],
      ["assistant", "Hello"],
    ]);
    expect(m[3]).toMatchObject({ streaming: true, status: "running", runId: "r2" });
  });

  it("shows the live run in place of its recorded turn, never twice", () => {
    const m = foldTranscript([turn(1, "r1", "first", null)], {
      inputs: { input: "first" },
      snapshot: running("r1", "Streaming"),
    });
    expect(m.map((x) => x.text)).toEqual(["first", "Streaming"]);
  });

  it("shows all the streamed text once the run ended and the typewriter caught up", () => {
    const s = running("r1", "Hi **there**", 2);
    s.status = "success";
    s.outputs = { output: "Hi **there**" };
    expect(liveAnswer(s)).toEqual({ text: "Hi", streaming: true });
    s.nodes.model.shown = s.nodes.model.text.length;
    expect(liveAnswer(s)).toEqual({ text: "Hi **there**", streaming: false });
  });

  it("answers with the outputs when nothing streamed", () => {
    const s = emptySnapshot();
    s.runId = "r1";
    s.status = "success";
    s.outputs = { output: "Plain" };
    expect(liveAnswer(s)).toEqual({ text: "Plain", streaming: false });
  });

  it("regenerates the last thing the user said", () => {
    expect(lastUserInputs([turn(1, "r1", "first", "A"), turn(2, "r2", "again", "B")], null)).toEqual({ input: "again" });
    expect(lastUserInputs([], null)).toBeNull();
  });
});
