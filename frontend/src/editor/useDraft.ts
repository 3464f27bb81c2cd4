/**
 * The flow's working draft: the canvas saved to the server a moment after each change
 * (`PUT flows/<id>/draft`), kept in this browser's localStorage until the server confirmed
 * it, and sent one last time (a `keepalive` request) when the tab goes away.
 *
 * Saving a draft is not saving a version: a draft is never validated, so an incomplete
 * flow is never lost. Every save names the draft revision it builds on; when another
 * editor saved in between, the server answers 409 with their draft and the editor asks
 * whether to load theirs or keep this one (overwrite).
 */
import { useCallback, useEffect, useRef, useState } from "react";
import { Api, ApiError } from "../lib/api";
import { graphKey, type Graph } from "../lib/graph";

/** clean: nothing to save; pending: waiting to save; saving; saved: on the server;
 * offline: not reachable (kept in this browser, retried); error: refused (message says
 * why); conflict: another editor saved meanwhile. */
export type DraftState = "clean" | "pending" | "saving" | "saved" | "offline" | "error" | "conflict";

export type ServerDraft = {
  revision: number;
  graph: Graph | null;
  updated_by?: string | null;
  updated_at?: string | null;
};

export type DraftConflict = {
  detail: string;
  theirs: ServerDraft;
  /** "server": another editor's save; "browser": this browser kept unsaved changes that
   * were made on top of an older draft. */
  source: "server" | "browser";
};

type LocalCopy = { graph: Graph; baseRevision: number; savedAt: string };

const DEBOUNCE_MS = 1200;
const MAX_WAIT_MS = 4000;
const RETRY_MS = [2000, 5000, 10000, 30000];

export type DraftControls = {
  state: DraftState;
  message: string | null;
  conflict: DraftConflict | null;
  /** Unsaved on the server (a page leaving now would rely on the unload save). */
  unconfirmed: boolean;
  restoredFromBrowser: string | null;
  keepTheirs: () => void;
  keepMine: () => void;
  discard: () => Promise<void>;
  saveNow: () => void;
};

export function useDraft({
  api,
  flowId,
  slug,
  enabled,
  graph,
  graphJson,
  baseVersion,
  initialRevision,
  initialJson,
  versionJson,
  onReplace,
}: {
  api: Api;
  flowId: number | null;
  slug: string;
  enabled: boolean;
  graph: Graph;
  graphJson: string;
  baseVersion: number | null;
  initialRevision: number;
  /** The canvas the page opened with (the draft, or the version). */
  initialJson: string;
  /** The version's graph (graphKey form): what the canvas shows after a discard. */
  versionJson: string;
  /** Put a graph on the canvas (the other editor's draft, this browser's copy). */
  onReplace: (graph: Graph | null) => void;
}): DraftControls {
  const key = `flowdeck:draft:${slug}:${flowId ?? "none"}`;
  const revision = useRef(initialRevision);
  const savedJson = useRef(initialJson);
  const latest = useRef({ graph, json: graphJson });
  latest.current = { graph, json: graphJson };
  const version = useRef(baseVersion);
  version.current = baseVersion;
  const [state, setState] = useState<DraftState>("clean");
  const [message, setMessage] = useState<string | null>(null);
  const [conflict, setConflict] = useState<DraftConflict | null>(null);
  const [restoredFromBrowser, setRestored] = useState<string | null>(null);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const localTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const firstPending = useRef<number | null>(null);
  const inflight = useRef(false);
  const again = useRef(false);
  const retries = useRef(0);
  const conflictRef = useRef<DraftConflict | null>(null);
  conflictRef.current = conflict;
  const active = enabled && flowId !== null;

  const writeLocal = useCallback(() => {
    if (!active) return;
    const copy: LocalCopy = { graph: latest.current.graph, baseRevision: revision.current, savedAt: new Date().toISOString() };
    try {
      localStorage.setItem(key, JSON.stringify(copy));
    } catch {
      /* quota or privacy mode: the server save is all there is */
    }
  }, [active, key]);

  const removeLocal = useCallback(() => {
    try {
      localStorage.removeItem(key);
    } catch {
      /* nothing kept */
    }
  }, [key]);

  const save = useCallback(async () => {
    if (!active || conflictRef.current) return;
    if (timer.current) clearTimeout(timer.current);
    timer.current = null;
    if (inflight.current) {
      again.current = true;
      return;
    }
    const { graph: sending, json } = latest.current;
    if (json === savedJson.current) {
      firstPending.current = null;
      removeLocal();
      setState((s) => (s === "clean" ? s : "saved"));
      return;
    }
    inflight.current = true;
    setState("saving");
    try {
      const saved = await api.put<ServerDraft>(`flows/${flowId}/draft`, {
        graph: sending,
        base_revision: revision.current,
        base_version: version.current,
      });
      revision.current = saved.revision;
      savedJson.current = json;
      retries.current = 0;
      setMessage(null);
      if (latest.current.json === json) {
        firstPending.current = null;
        removeLocal();
        setState("saved");
      } else {
        again.current = true;
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        const body = err.body as { detail?: string; draft?: ServerDraft };
        const theirs = body.draft ?? { revision: 0, graph: null };
        if (theirs.graph && graphKey(theirs.graph) === json) {
          // Our own save, made by the unload request of an earlier page: adopt it.
          revision.current = theirs.revision;
          savedJson.current = json;
          setState("saved");
        } else {
          setConflict({ detail: body.detail ?? "Another editor changed this draft.", theirs, source: "server" });
          setState("conflict");
        }
      } else if (err instanceof ApiError && err.status < 500 && err.status !== 0) {
        setMessage(err.message);
        setState("error");
      } else {
        // Unreachable: keep the local copy and try again later.
        setState("offline");
        setMessage("The server can't be reached: your changes are kept in this browser.");
        const wait = RETRY_MS[Math.min(retries.current, RETRY_MS.length - 1)];
        retries.current += 1;
        timer.current = setTimeout(() => void save(), wait);
      }
    } finally {
      inflight.current = false;
      if (again.current) {
        again.current = false;
        timer.current = setTimeout(() => void save(), 50);
      }
    }
  }, [active, api, flowId, removeLocal]);

  // A change: keep a local copy at once (cheaply throttled), save shortly after.
  useEffect(() => {
    if (!active || conflict) return;
    if (graphJson === savedJson.current) {
      if (!inflight.current && state === "pending") setState("saved");
      return;
    }
    setState((s) => (s === "offline" || s === "error" ? s : "pending"));
    if (!localTimer.current) {
      localTimer.current = setTimeout(() => {
        localTimer.current = null;
        if (latest.current.json !== savedJson.current) writeLocal();
      }, 300);
    }
    const now = Date.now();
    firstPending.current ??= now;
    const wait = Math.max(0, Math.min(DEBOUNCE_MS, firstPending.current + MAX_WAIT_MS - now));
    if (timer.current) clearTimeout(timer.current);
    timer.current = setTimeout(() => void save(), wait);
  }, [active, conflict, graphJson]); // eslint-disable-line react-hooks/exhaustive-deps

  // This browser's copy of changes the server never confirmed (a crash, a closed tab
  // whose last request did not arrive): put it back, or ask when the draft moved on.
  useEffect(() => {
    if (!active) return;
    let copy: LocalCopy | null = null;
    try {
      const raw = localStorage.getItem(key);
      copy = raw ? (JSON.parse(raw) as LocalCopy) : null;
    } catch {
      copy = null;
    }
    if (!copy?.graph) return;
    const copyJson = graphKey(copy.graph);
    if (copyJson === initialJson) {
      removeLocal();
      return;
    }
    if (copy.baseRevision === initialRevision) {
      onReplace(copy.graph);
      setRestored(copy.savedAt);
      return;
    }
    setConflict({
      detail: "This browser kept changes that were never saved, but the draft has changed since.",
      theirs: { revision: initialRevision, graph: JSON.parse(initialJson) as Graph },
      source: "browser",
    });
    // "Keep mine" puts this browser's copy back.
    pendingLocal.current = copy.graph;
    setState("conflict");
  }, []); // eslint-disable-line react-hooks/exhaustive-deps
  const pendingLocal = useRef<Graph | null>(null);

  // Leaving: save now while the page lives; when it is going away, one keepalive request.
  useEffect(() => {
    if (!active) return;
    const hidden = () => {
      if (document.visibilityState === "hidden" && latest.current.json !== savedJson.current) {
        writeLocal();
        void save();
      }
    };
    const leaving = () => {
      if (latest.current.json === savedJson.current || conflictRef.current) return;
      writeLocal();
      api.sendOnUnload("PUT", `flows/${flowId}/draft`, {
        graph: latest.current.graph,
        base_revision: revision.current,
        base_version: version.current,
      });
    };
    const back = (event: PageTransitionEvent) => {
      // Back from the page cache: the unload request may have landed; ask where we are.
      if (!event.persisted) return;
      void api
        .get<ServerDraft>(`flows/${flowId}/draft`)
        .then((d) => {
          if (d.graph && graphKey(d.graph) === latest.current.json) {
            revision.current = d.revision;
            savedJson.current = latest.current.json;
            setState("saved");
          }
        })
        .catch(() => undefined);
    };
    document.addEventListener("visibilitychange", hidden);
    window.addEventListener("pagehide", leaving);
    window.addEventListener("pageshow", back);
    return () => {
      document.removeEventListener("visibilitychange", hidden);
      window.removeEventListener("pagehide", leaving);
      window.removeEventListener("pageshow", back);
    };
  }, [active, api, flowId, save, writeLocal]);

  const keepTheirs = useCallback(() => {
    const c = conflictRef.current;
    if (!c) return;
    revision.current = c.theirs.revision;
    const theirs = c.theirs.graph;
    savedJson.current = theirs ? graphKey(theirs) : versionJson;
    pendingLocal.current = null;
    removeLocal();
    setConflict(null);
    onReplace(theirs);
    setState("saved");
  }, [onReplace, removeLocal, versionJson]);

  const keepMine = useCallback(() => {
    const c = conflictRef.current;
    if (!c) return;
    revision.current = c.theirs.revision;
    if (pendingLocal.current) onReplace(pendingLocal.current);
    pendingLocal.current = null;
    conflictRef.current = null;
    setConflict(null);
    setState("pending");
    timer.current = setTimeout(() => void save(), 50);
  }, [onReplace, save]);

  const discard = useCallback(async () => {
    if (!active) return;
    if (timer.current) clearTimeout(timer.current);
    timer.current = null;
    await api.delete(`flows/${flowId}/draft`);
    revision.current = 0;
    savedJson.current = versionJson;
    removeLocal();
    setConflict(null);
    onReplace(null);
    setState("clean");
  }, [active, api, flowId, onReplace, removeLocal, versionJson]);

  return {
    state,
    message,
    conflict,
    unconfirmed: active && graphJson !== savedJson.current,
    restoredFromBrowser,
    keepTheirs,
    keepMine,
    discard,
    saveNow: () => void save(),
  };
}
