/** Sticky notes and group frames: layout only (saved in the graph, never run). */
import { NodeResizer, type NodeProps } from "@xyflow/react";
import { createContext, memo, useContext } from "react";
import type { GroupNode, NoteNode } from "../lib/graph";

/** How an annotation tells the editor its text changed (and whether it may). */
export type AnnotationEditing = { readOnly: boolean; update: (id: string, data: Record<string, unknown>) => void };
export const AnnotationContext = createContext<AnnotationEditing>({ readOnly: true, update: () => undefined });

function NoteImpl({ id, data, selected }: NodeProps<NoteNode>) {
  const { readOnly, update } = useContext(AnnotationContext);
  return (
    <div className={`note color-${data.color ?? "yellow"}${selected ? " selected" : ""}`} data-testid={`note-${id}`}>
      <NodeResizer isVisible={selected && !readOnly} minWidth={120} minHeight={60} />
      {readOnly ? (
        <p className="note-text">{data.text}</p>
      ) : (
        <textarea
          className="note-text nodrag nowheel"
          aria-label="Note"
          placeholder="Write a note…"
          value={data.text}
          maxLength={5000}
          onChange={(e) => update(id, { text: e.target.value })}
        />
      )}
    </div>
  );
}

function GroupImpl({ id, data, selected }: NodeProps<GroupNode>) {
  const { readOnly, update } = useContext(AnnotationContext);
  return (
    <div className={`group-frame color-${data.color ?? "blue"}${selected ? " selected" : ""}`} data-testid={`group-${id}`}>
      <NodeResizer isVisible={selected && !readOnly} minWidth={160} minHeight={100} />
      {readOnly ? (
        <div className="group-title">{data.title}</div>
      ) : (
        <input
          className="group-title nodrag"
          aria-label="Group title"
          value={data.title}
          maxLength={200}
          onChange={(e) => update(id, { title: e.target.value })}
        />
      )}
    </div>
  );
}

export const NoteCard = memo(NoteImpl);
export const GroupFrame = memo(GroupImpl);
