import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import { ExecClient, RunRejected, execUrl, type ConnectionState, type Rejection } from "../protocol/execClient";
import { RunStore, type RunSnapshot } from "./runStore";

export type RunControls = {
  snapshot: RunSnapshot;
  connection: ConnectionState;
  attempt: number;
  rejection: Rejection | null;
  start: (request: Parameters<ExecClient["run"]>[0], nodeIds: string[]) => Promise<string | null>;
  watch: (runId: string, nodeIds: string[]) => void;
  cancel: () => void;
  rerun: (runId: string, nodeIds: string[], fromNode?: string) => Promise<string | null>;
  replay: (runId: string, speed: number | "instant", nodeIds: string[], fromSeq?: number) => void;
  replayPause: () => void;
  replayPlay: () => void;
  replayState: "idle" | "playing" | "paused" | "finished";
  client: ExecClient;
};

/** One protocol client and one run store for a page; the panel and the canvas read them. */
export function useRun(wsPath: string): RunControls {
  const client = useMemo(() => new ExecClient({ url: execUrl(wsPath) }), [wsPath]);
  const storeRef = useRef<RunStore | null>(null);
  if (!storeRef.current) storeRef.current = new RunStore();
  const store = storeRef.current;
  const snapshot = useSyncExternalStore(store.subscribe, store.getSnapshot);
  const [connection, setConnection] = useState<ConnectionState>("closed");
  const [attempt, setAttempt] = useState(0);
  const [rejection, setRejection] = useState<Rejection | null>(null);
  const [replayState, setReplayState] = useState<RunControls["replayState"]>("idle");

  useEffect(() => {
    const offEvent = client.onEvent((event) => store.apply(event));
    const offReplay = client.onReplay((event) => {
      if (event.event === "replay_started") return;
      if (event.event === "replay_finished") setReplayState("finished");
      else store.apply(event);
    });
    const offState = client.onState((state, info) => {
      setConnection(state);
      setAttempt(info.attempt);
    });
    client.connect();
    return () => {
      offEvent();
      offReplay();
      offState();
      client.close();
    };
  }, [client, store]);

  const start = useCallback(
    async (request: Parameters<ExecClient["run"]>[0], nodeIds: string[]) => {
      setRejection(null);
      store.reset(null, "starting", nodeIds);
      try {
        const runId = await client.run(request);
        store.reset(runId, "running", nodeIds);
        return runId;
      } catch (err) {
        // Refused: nothing runs, so no node stays "queued" from the start that failed.
        store.reset(null, "idle", []);
        setRejection(
          err instanceof RunRejected ? err.rejection : { code: "failed", message: (err as Error).message },
        );
        return null;
      }
    },
    [client, store],
  );

  const watch = useCallback(
    (runId: string, nodeIds: string[]) => {
      store.reset(runId, "running", nodeIds);
      client.resume(runId, 0);
    },
    [client, store],
  );

  const rerun = useCallback(
    async (runId: string, nodeIds: string[], fromNode?: string) => {
      setRejection(null);
      setReplayState("idle");
      store.reset(null, "starting", nodeIds);
      try {
        const newRunId = await client.rerun(runId, fromNode);
        store.reset(newRunId, "running", nodeIds);
        return newRunId;
      } catch (err) {
        // Refused: nothing runs, so no node stays "queued" from the start that failed.
        store.reset(null, "idle", []);
        setRejection(
          err instanceof RunRejected ? err.rejection : { code: "failed", message: (err as Error).message },
        );
        return null;
      }
    },
    [client, store],
  );

  const replay = useCallback(
    (runId: string, speed: number | "instant", nodeIds: string[], fromSeq = 0) => {
      setRejection(null);
      store.reset(runId, "running", nodeIds);
      setReplayState("playing");
      client.replay(runId, speed, fromSeq);
    },
    [client, store],
  );

  const replayPause = useCallback(() => {
    client.replayPause();
    setReplayState("paused");
  }, [client]);

  const replayPlay = useCallback(() => {
    client.replayPlay();
    setReplayState("playing");
  }, [client]);

  useEffect(() => client.onRejected((r) => setRejection(r)), [client]);

  const cancel = useCallback(() => {
    const runId = store.getSnapshot().runId;
    if (runId) client.cancel(runId);
  }, [client, store]);

  return {
    snapshot,
    connection,
    attempt,
    rejection,
    start,
    watch,
    cancel,
    rerun,
    replay,
    replayPause,
    replayPlay,
    replayState,
    client,
  };
}
