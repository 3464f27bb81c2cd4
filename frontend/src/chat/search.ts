/** Searching a flow's conversations: the list endpoint's `q` (titles and the turns' text,
 * matched on the server) and the small delay that keeps typing from sending a request per key. */
import { useEffect, useState } from "react";

/** The server refuses longer queries (chat/api.py MAX_SEARCH_CHARS). */
export const MAX_SEARCH_CHARS = 200;
export const SEARCH_DEBOUNCE_MS = 250;

/** What is actually searched for: trimmed, at most MAX_SEARCH_CHARS characters (code points,
 * so a cut never splits a character outside the BMP). */
export function searchText(typed: string): string {
  return Array.from(typed.trim()).slice(0, MAX_SEARCH_CHARS).join("").trim();
}

/** The list endpoint's path (relative to the API base) for the flow's conversations
 * matching `query`; the whole list for an empty one. */
export function conversationListPath(flowId: number | null, query: string): string {
  const q = searchText(query);
  const path = `flows/${flowId}/conversations`;
  return q ? `${path}?${new URLSearchParams({ q })}` : path;
}

/** `value` once it has stopped changing for `ms`; an empty value at once (clearing the box
 * brings the whole list back without waiting). */
export function useSettled(value: string, ms: number = SEARCH_DEBOUNCE_MS): string {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    if (!value) {
      setSettled(value);
      return;
    }
    const timer = window.setTimeout(() => setSettled(value), ms);
    return () => window.clearTimeout(timer);
  }, [value, ms]);
  return settled;
}
