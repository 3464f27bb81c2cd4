/** The playground as a page of its own: the flow's conversations on the left (search, new,
 * pick, rename, delete through the chat API), the picked one's transcript on the right. */
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Api, ApiError } from "../lib/api";
import type { IslandConfig } from "../lib/config";
import { Playground } from "./Playground";
import { conversationListPath, MAX_SEARCH_CHARS, searchText, useSettled } from "./search";

type ConversationRow = { id: string; title: string; turns: number; updated_at: string };

function pickedFromUrl(): string | null {
  return new URLSearchParams(window.location.search).get("conversation");
}

export function ChatPage({ config }: { config: IslandConfig }) {
  const api = useMemo(() => new Api(config.apiBase), [config.apiBase]);
  const [rows, setRows] = useState<ConversationRow[]>([]);
  const [picked, setPicked] = useState<string | null>(pickedFromUrl);
  const [error, setError] = useState<string | null>(null);
  // What the box holds, what is searched once typing pauses, and what the rows answer
  // (null until the first list arrives).
  const [typed, setTyped] = useState("");
  const query = useSettled(searchText(typed));
  const [shownFor, setShownFor] = useState<string | null>(null);
  const latest = useRef(0);

  const reload = useCallback(async () => {
    // Answers can arrive out of order while someone types: only the newest request's counts.
    const ticket = ++latest.current;
    try {
      const found = await api.get<ConversationRow[]>(conversationListPath(config.flowId, query));
      if (ticket !== latest.current) return;
      setRows(found);
      setShownFor(query);
    } catch (err) {
      if (ticket === latest.current) setError(err instanceof ApiError ? err.message : String(err));
    }
  }, [api, config.flowId, query]);

  useEffect(() => {
    void reload();
  }, [reload]);

  const pick = (id: string | null) => {
    setPicked(id);
    const url = new URL(window.location.href);
    if (id) url.searchParams.set("conversation", id);
    else url.searchParams.delete("conversation");
    window.history.replaceState(null, "", url);
  };

  const rename = async (row: ConversationRow) => {
    const title = window.prompt("Rename conversation", row.title);
    if (!title || title === row.title) return;
    try {
      await api.request("PATCH", `conversations/${row.id}`, { title });
      await reload();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };

  const remove = async (row: ConversationRow) => {
    if (!window.confirm(`Delete "${row.title || "Untitled"}" and its turns?`)) return;
    try {
      await api.delete(`conversations/${row.id}`);
      if (picked === row.id) pick(null);
      await reload();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };

  return (
    <div className="chat-page">
      <aside className="chat-list" aria-label="Conversations" data-testid="conversation-list">
        <button type="button" className="primary" onClick={() => pick(null)} data-testid="conversation-new">
          New conversation
        </button>
        <input
          type="search"
          className="chat-search"
          value={typed}
          maxLength={MAX_SEARCH_CHARS}
          placeholder="Search conversations"
          aria-label="Search conversations (titles and messages)"
          data-testid="conversation-search"
          onChange={(e) => setTyped(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Escape") setTyped("");
          }}
        />
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <ul data-testid="conversation-rows" data-shown-for={shownFor ?? ""} aria-busy={shownFor !== query}>
          {rows.map((row) => (
            <li key={row.id} className={row.id === picked ? "active" : ""} data-testid="conversation-row" data-id={row.id}>
              <button type="button" className="link chat-pick" onClick={() => pick(row.id)} title={row.title}>
                {row.title || "Untitled"}
              </button>
              <small className="muted" data-testid="conversation-turns">
                {row.turns === 1 ? "1 turn" : `${row.turns} turns`}
              </small>
              {config.canEdit && (
                <span className="chat-row-actions">
                  <button type="button" className="link" onClick={() => void rename(row)} data-testid="conversation-rename">
                    Rename
                  </button>
                  <button type="button" className="link chat-delete" onClick={() => void remove(row)} data-testid="conversation-delete">
                    Delete
                  </button>
                </span>
              )}
            </li>
          ))}
        </ul>
        {rows.length === 0 && shownFor === "" && <p className="muted">No conversations yet.</p>}
        {rows.length === 0 && shownFor && (
          <p className="muted" data-testid="conversation-no-match">
            No conversations match “{shownFor}”.{" "}
            <button type="button" className="link" onClick={() => setTyped("")} data-testid="conversation-search-clear">
              Clear search
            </button>
          </p>
        )}
      </aside>
      <Playground
        config={config}
        inputIds={config.chatInputs ?? []}
        conversationId={picked}
        onConversation={pick}
        onChanged={() => void reload()}
      />
    </div>
  );
}
