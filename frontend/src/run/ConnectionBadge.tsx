import type { ConnectionState } from "../protocol/execClient";

const LABEL: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  closed: "Offline",
};

/** Whether the live connection is up; announced to screen readers when it changes. */
export function ConnectionBadge({ state, attempt }: { state: ConnectionState; attempt: number }) {
  return (
    <span className={`conn conn-${state}`} data-testid="connection" data-state={state} role="status" aria-live="polite">
      <span className="dot" aria-hidden="true" />
      {LABEL[state]}
      {state === "reconnecting" && attempt > 1 ? ` (try ${attempt})` : ""}
    </span>
  );
}
