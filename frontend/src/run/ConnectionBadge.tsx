import type { ConnectionState } from "../protocol/execClient";
import { useOnline } from "../lib/theme";

const LABEL: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  closed: "Offline",
};

/** Whether the live connection is up; announced to screen readers when it changes. A
 * browser without a network is offline whatever the socket last said (a socket does not
 * notice a dead network until its next write or a timeout). */
export function ConnectionBadge({ state, attempt }: { state: ConnectionState; attempt: number }) {
  const online = useOnline();
  const shown = online ? state : "offline";
  return (
    <span className={`conn conn-${online ? state : "closed"}`} data-testid="connection" data-state={shown} role="status" aria-live="polite">
      <span className="dot" aria-hidden="true" />
      {online ? LABEL[state] : "Offline (no network)"}
      {online && state === "reconnecting" && attempt > 1 ? ` (try ${attempt})` : ""}
    </span>
  );
}
