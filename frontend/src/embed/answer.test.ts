import { describe, expect, it } from "vitest";
import { applyEvent, emptyAnswer, type VisitorEvent } from "./answer";

function play(events: VisitorEvent[]) {
  return events.reduce(applyEvent, emptyAnswer());
}

describe("embedded chat answer", () => {
  it("appends tokens in order and ignores what a resumed stream repeats", () => {
    const answer = play([
      { event: "token", seq: 3, node: "llm", text: "Hel" },
      { event: "token", seq: 4, node: "llm", text: "lo" },
      { event: "token", seq: 4, node: "llm", text: "lo" },
      { event: "token", seq: 3, node: "llm", text: "Hel" },
      { event: "token", seq: 6, node: "llm", text: "!" },
    ]);
    expect(answer.text).toBe("Hello!");
    expect(answer.seq).toBe(6);
  });

  it("keeps to the node that streamed first", () => {
    const answer = play([
      { event: "token", seq: 2, node: "a", text: "one" },
      { event: "token", seq: 3, node: "b", text: "two" },
      { event: "token", seq: 4, node: "a", text: " three" },
    ]);
    expect(answer.text).toBe("one three");
  });

  it("takes the final answer when nothing streamed, and collects sources", () => {
    const answer = play([
      { event: "sources", seq: 2, hits: [{ title: "FAQ.pdf", page: 3, excerpt: "Returns" }] },
      { event: "done", seq: 5, status: "success", answer: "Done.", error: null },
      { event: "token", seq: 6, node: "llm", text: "late" },
    ]);
    expect(answer).toMatchObject({ text: "Done.", done: true, status: "success" });
    expect(answer.sources.map((s) => s.title)).toEqual(["FAQ.pdf"]);
  });

  it("keeps the streamed text and the visitor-safe error of a failed run", () => {
    const answer = play([
      { event: "token", seq: 2, node: "llm", text: "Partial" },
      { event: "done", seq: 3, status: "error", answer: "", error: "Sorry" },
    ]);
    expect(answer).toMatchObject({ text: "Partial", status: "error", error: "Sorry" });
  });
});
