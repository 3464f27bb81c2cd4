import type { Pin } from "../lib/graph";

function short(runId: string): string {
  return runId.slice(0, 8);
}

/**
 * Pinning the node's output (docs/protocol.md, "Pinned outputs"): while building what
 * follows a slow or costly node, keep the output it gave in a run, and the next runs reuse
 * it instead of executing it again. The server reads the value from that run's log.
 */
export function PinSection({
  pinned,
  available,
  readOnly,
  onChange,
}: {
  pinned: Pin | undefined;
  /** The run whose recorded output this node could be pinned to (it finished in it). */
  available: string | null;
  readOnly: boolean;
  onChange: (pin: Pin | undefined) => void;
}) {
  return (
    <fieldset className="policy pin" data-testid="pin-section" disabled={readOnly}>
      <legend>Pinned output</legend>
      {pinned ? (
        <>
          <p className="pin-state" data-testid="pin-state">
            ◉ Pinned to the output of run <code>{short(pinned.run)}</code>: runs reuse it and do not execute this node.
          </p>
          <button type="button" className="secondary small" data-testid="unpin" onClick={() => onChange(undefined)}>
            Unpin
          </button>
          {available && available !== pinned.run && (
            <button type="button" className="secondary small" data-testid="pin-latest" onClick={() => onChange({ run: available })}>
              Pin run {short(available)} instead
            </button>
          )}
        </>
      ) : available ? (
        <>
          <p className="muted">Keep this node's output from run <code>{short(available)}</code>, so the next runs reuse it instead of calling it again.</p>
          <button type="button" className="secondary small" data-testid="pin" onClick={() => onChange({ run: available })}>
            ◉ Pin this output
          </button>
        </>
      ) : (
        <p className="muted" data-testid="pin-unavailable">
          Run the flow: once this node has an output, it can be pinned to it.
        </p>
      )}
    </fieldset>
  );
}
