/** What the side panel shows when no component is selected: the flow's problems; or the
 * selected note or group. */
import { ANNOTATION_COLORS, type CanvasNode } from "../lib/graph";
import type { Problem } from "./problems";

export function ProblemsPanel({
  problems,
  nodes,
  readOnly,
  onSelect,
}: {
  problems: Problem[];
  nodes: CanvasNode[];
  readOnly: boolean;
  onSelect: (id: string) => void;
}) {
  const known = new Set(nodes.map((n) => n.id));
  return (
    <section className="problems-panel" aria-label="Problems" data-testid="problems-panel">
      {problems.length > 0 ? (
        <>
          <h2>
            {problems.length === 1 ? "1 problem" : `${problems.length} problems`}
          </h2>
          <p className="muted">Fix these before running or saving a version; your draft is kept meanwhile.</p>
          <ul className="problem-list">
            {problems.map((p, i) => {
              const id = p.node_id ?? p.node ?? null;
              return (
                <li key={i}>
                  {id && known.has(id) ? (
                    <button type="button" className="link" onClick={() => onSelect(id)} data-testid={`problem-node-${id}`}>
                      {id}
                    </button>
                  ) : (
                    <strong>Flow</strong>
                  )}
                  : {p.message}
                </li>
              );
            })}
          </ul>
        </>
      ) : (
        <p className="muted">
          Select a node to see its parameters.
          {!readOnly &&
            " Drag components from the left onto the canvas and connect an output (right side) to an input (left side) of the same type; or select a node and press C to connect it from the keyboard."}
        </p>
      )}
    </section>
  );
}

export function AnnotationPanel({
  node,
  readOnly,
  onChange,
}: {
  node: CanvasNode;
  readOnly: boolean;
  onChange: (data: Record<string, unknown>) => void;
}) {
  const kind = node.type === "frame" ? "Group" : "Note";
  const color = (node.data as { color?: string }).color ?? (node.type === "frame" ? "blue" : "yellow");
  return (
    <section aria-label={kind}>
      <h2>{kind}</h2>
      <p className="muted">
        {node.type === "frame"
          ? "A frame with a title around related nodes: moving it moves what it encloses. Runs ignore it."
          : "A sticky note for whoever reads this flow next. Runs ignore it."}
      </p>
      <label htmlFor="annotation-color">Colour</label>
      <select id="annotation-color" value={color} disabled={readOnly} onChange={(e) => onChange({ color: e.target.value })}>
        {ANNOTATION_COLORS.map((c) => (
          <option key={c} value={c}>
            {c}
          </option>
        ))}
      </select>
    </section>
  );
}
