import { useMemo, useState } from "react";
import type { Component } from "../lib/graph";

export const DRAG_TYPE = "application/x-flowdeck-component";

/** The components enabled for this workspace, grouped by category, searchable, draggable. */
export function Palette({
  components,
  disabled,
  onAdd,
  onCollapse,
}: {
  components: Component[];
  disabled: boolean;
  onAdd: (key: string) => void;
  onCollapse?: () => void;
}) {
  const [query, setQuery] = useState("");
  const groups = useMemo(() => {
    const q = query.trim().toLowerCase();
    const byCategory = new Map<string, Component[]>();
    for (const c of components) {
      const hay = `${c.label} ${c.key} ${c.category} ${c.description}`.toLowerCase();
      if (q && !hay.includes(q)) continue;
      const list = byCategory.get(c.category) ?? [];
      list.push(c);
      byCategory.set(c.category, list);
    }
    return [...byCategory.entries()].sort(([a], [b]) => a.localeCompare(b));
  }, [components, query]);

  return (
    <aside className="palette" aria-label="Components">
      <div className="palette-head">
        <input
          type="search"
          placeholder="Search components"
          aria-label="Search components"
          value={query}
          onChange={(e) => setQuery(e.target.value)}
        />
        {onCollapse && (
          <button
            type="button"
            className="secondary small"
            onClick={onCollapse}
            aria-label="Hide the components"
            title="Hide the components"
            data-testid="palette-collapse"
          >
            «
          </button>
        )}
      </div>
      {groups.length === 0 && <p className="muted">No component matches.</p>}
      {groups.map(([category, items]) => (
        <section key={category} className="palette-group">
          <h3>{category}</h3>
          <ul>
            {items.map((c) => (
              <li key={c.key}>
                <button
                  type="button"
                  className="palette-item"
                  data-testid={`palette-${c.key}`}
                  draggable={!disabled}
                  disabled={disabled}
                  title={`${c.description}\n(drag onto the canvas, or press Enter to add)`}
                  onDragStart={(e) => {
                    e.dataTransfer.setData(DRAG_TYPE, c.key);
                    e.dataTransfer.setData("text/plain", c.key);
                    e.dataTransfer.effectAllowed = "move";
                  }}
                  onClick={() => onAdd(c.key)}
                >
                  <span className="palette-label">{c.label}</span>
                  <small>{c.key}</small>
                </button>
              </li>
            ))}
          </ul>
        </section>
      ))}
    </aside>
  );
}
