import { useEffect, useId, useState } from "react";
import { RETRYABLE, type NodePolicy, type OnFailure } from "../lib/graph";

/** What each retryable failure is called in the panel (flows.policy.RETRYABLE). */
const RETRY_LABELS: Record<(typeof RETRYABLE)[number], string> = {
  server_error: "Provider errors (5xx)",
  rate_limited: "Rate limits (429)",
  timeout: "Timeouts",
  connection: "Connection errors",
};

const ON_FAILURE: { value: OnFailure; label: string; hint: string }[] = [
  { value: "stop", label: "Stop the run", hint: "The node's error fails the run." },
  {
    value: "error_port",
    label: "Take the error port",
    hint: "The node gets an output “error” ({message, code}): wire what should happen instead. What hangs off its other outputs is skipped.",
  },
  { value: "fallback", label: "Use a fallback value", hint: "The run goes on with this value as the node's output." },
];

/** The policy without the values that are defaults anyway (undefined when nothing is left),
 * so a node whose policy is back to the defaults saves exactly as one that never had one. */
export function tidyPolicy(policy: NodePolicy): NodePolicy | undefined {
  const out: NodePolicy = {};
  if (policy.retries) out.retries = policy.retries;
  if (policy.retries && policy.backoff_seconds !== undefined && policy.backoff_seconds !== 1) out.backoff_seconds = policy.backoff_seconds;
  if (policy.retries && policy.retry_on && policy.retry_on.length !== RETRYABLE.length) out.retry_on = policy.retry_on;
  if (policy.timeout_seconds) out.timeout_seconds = policy.timeout_seconds;
  if (policy.on_failure && policy.on_failure !== "stop") out.on_failure = policy.on_failure;
  if (policy.on_failure === "fallback" && policy.fallback !== undefined) out.fallback = policy.fallback;
  return Object.keys(out).length ? out : undefined;
}

/** The fallback value's editor: text (stored as a string) or any JSON. */
function FallbackEditor({ id, value, disabled, onChange }: { id: string; value: unknown; disabled: boolean; onChange: (v: unknown) => void }) {
  const [mode, setMode] = useState<"text" | "json">(value === undefined || typeof value === "string" ? "text" : "json");
  const [raw, setRaw] = useState(value === undefined ? "" : mode === "text" ? String(value) : JSON.stringify(value, null, 2));
  const [bad, setBad] = useState<string | null>(null);
  useEffect(() => setBad(null), [mode]);
  const commit = (text: string, as: "text" | "json") => {
    if (as === "text") {
      onChange(text === "" ? undefined : text);
      return;
    }
    try {
      const parsed = text.trim() === "" ? undefined : JSON.parse(text);
      setBad(parsed === null ? "null is no fallback: give a value." : null);
      onChange(parsed === null ? undefined : parsed);
    } catch {
      setBad("This is not JSON yet: the last valid value is kept.");
    }
  };
  return (
    <>
      <div className="policy-mode" role="radiogroup" aria-label="Fallback value is">
        {(["text", "json"] as const).map((m) => (
          <label key={m} className="inline">
            <input
              type="radio"
              name={`${id}-mode`}
              value={m}
              checked={mode === m}
              disabled={disabled}
              data-testid={`fallback-mode-${m}`}
              onChange={() => {
                setMode(m);
                commit(raw, m);
              }}
            />{" "}
            {m === "text" ? "Text" : "JSON"}
          </label>
        ))}
      </div>
      <textarea
        id={id}
        rows={3}
        value={raw}
        disabled={disabled}
        data-policy="fallback"
        placeholder={mode === "text" ? "Sorry, the assistant is unavailable right now." : '{"answer": "n/a"}'}
        onChange={(e) => {
          setRaw(e.target.value);
          commit(e.target.value, mode);
        }}
      />
      {bad && (
        <p className="field-note warn" role="status">
          {bad}
        </p>
      )}
    </>
  );
}

/**
 * The node's policy (docs/protocol.md, "Node policy"): retries, a timeout, and what its
 * failure does. Shown under every node's parameters, whatever its component.
 */
export function PolicySection({
  policy,
  readOnly,
  onChange,
}: {
  policy: NodePolicy | undefined;
  readOnly: boolean;
  onChange: (policy: NodePolicy | undefined) => void;
}) {
  const uid = useId();
  const p = policy ?? {};
  const retries = p.retries ?? 0;
  const onFailure = p.on_failure ?? "stop";
  const retryOn = p.retry_on ?? [...RETRYABLE];
  const set = (patch: Partial<NodePolicy>) => onChange(tidyPolicy({ ...p, ...patch }));
  const number = (text: string): number | undefined => (text === "" ? undefined : Number(text));
  const summary = [
    retries ? `${retries} ${retries === 1 ? "retry" : "retries"}` : "no retries",
    p.timeout_seconds ? `timeout ${p.timeout_seconds} s` : null,
    ON_FAILURE.find((o) => o.value === onFailure)!.label.toLowerCase(),
  ]
    .filter(Boolean)
    .join(" · ");
  return (
    <fieldset className="policy" data-testid="policy-section" disabled={readOnly}>
      <legend>On failure</legend>
      <p className="muted policy-summary" data-testid="policy-summary">
        {summary}
      </p>
      <div className="policy-row">
        <div className="field">
          <label htmlFor={`${uid}-retries`}>Retries</label>
          <input
            id={`${uid}-retries`}
            type="number"
            min={0}
            max={5}
            step={1}
            value={retries}
            data-policy="retries"
            onChange={(e) => set({ retries: Math.max(0, Math.min(5, Math.round(number(e.target.value) ?? 0))) })}
          />
        </div>
        <div className="field">
          <label htmlFor={`${uid}-timeout`}>Timeout (s)</label>
          <input
            id={`${uid}-timeout`}
            type="number"
            min={0.1}
            max={3600}
            step="any"
            placeholder="none"
            value={p.timeout_seconds ?? ""}
            data-policy="timeout_seconds"
            onChange={(e) => set({ timeout_seconds: number(e.target.value) })}
          />
        </div>
      </div>
      {retries > 0 && (
        <>
          <div className="field">
            <label htmlFor={`${uid}-backoff`}>Backoff (s)</label>
            <input
              id={`${uid}-backoff`}
              type="number"
              min={0}
              max={60}
              step="any"
              placeholder="1 (default)"
              value={p.backoff_seconds ?? ""}
              data-policy="backoff_seconds"
              onChange={(e) => set({ backoff_seconds: number(e.target.value) })}
            />
            <small className="muted">Doubled for each retry (at most 60 s), with some randomness.</small>
          </div>
          <div className="field" role="group" aria-label="Retry on">
            <span className="label">Retry on</span>
            {RETRYABLE.map((code) => (
              <label key={code} className="inline">
                <input
                  type="checkbox"
                  checked={retryOn.includes(code)}
                  data-policy={`retry_on-${code}`}
                  onChange={(e) =>
                    set({ retry_on: e.target.checked ? RETRYABLE.filter((c) => c === code || retryOn.includes(c)) : retryOn.filter((c) => c !== code) })
                  }
                />{" "}
                {RETRY_LABELS[code]}
              </label>
            ))}
            <small className="muted">A node's own errors (a bad parameter, input that is not JSON) are never retried.</small>
          </div>
        </>
      )}
      <div className="field">
        <label htmlFor={`${uid}-on-failure`}>When it still fails</label>
        <select
          id={`${uid}-on-failure`}
          value={onFailure}
          data-policy="on_failure"
          onChange={(e) => set({ on_failure: e.target.value as OnFailure })}
        >
          {ON_FAILURE.map((o) => (
            <option key={o.value} value={o.value}>
              {o.label}
            </option>
          ))}
        </select>
        <small className="muted">{ON_FAILURE.find((o) => o.value === onFailure)!.hint}</small>
      </div>
      {onFailure === "fallback" && (
        <div className="field">
          <label htmlFor={`${uid}-fallback`}>Fallback value</label>
          <FallbackEditor id={`${uid}-fallback`} value={p.fallback} disabled={readOnly} onChange={(fallback) => set({ fallback })} />
        </div>
      )}
    </fieldset>
  );
}
