import { describe, expect, it } from "vitest";
import { portsOf } from "../lib/graph";
import { subflowPorts } from "./SubflowPicker";

describe("sub-flow node", () => {
  it("takes its ports from the picked flow's chat inputs and text outputs", () => {
    const graph = {
      nodes: [
        { id: "question", component: "io.chat_input" },
        { id: "model", component: "llm.demo" },
        { id: "answer", component: "io.text_output" },
        { id: "notes", component: "io.text_output" },
      ],
    };
    expect(subflowPorts(graph)).toEqual({ inputs: ["question"], outputs: ["answer", "notes"] });
    expect(subflowPorts(null)).toEqual({ inputs: [], outputs: [] });
  });

  it("shows those ports on the canvas", () => {
    const component = { key: "flow.subflow", label: "Sub-flow", category: "Flows", inputs: [], outputs: [] };
    const ports = portsOf(component as never, { flow: 3, inputs: ["question"], outputs: ["answer"] });
    expect(ports.inputs.map((p) => p.name)).toEqual(["question"]);
    expect(ports.outputs.map((p) => p.name)).toEqual(["answer"]);
  });
});
