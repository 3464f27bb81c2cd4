/**
 * The router's rules as a form (not JSON): each rule sends the input to an output when its
 * keywords or regex match; the first matching rule wins, else the default output.
 *
 * The preview asks the server (`POST router/preview`), which matches with the router's own
 * code on RE2: a JavaScript regex differs from RE2 (syntax, Unicode classes, what is
 * refused), so a preview computed here could disagree with the run. Keywords match as
 * whole words in spaced scripts and anywhere in Chinese or Japanese (人工 in 我要人工客服).
 */
import { useEffect, useId, useState } from "react";
import type { Api } from "../lib/api";

export type Rule = { output: string; match: "keyword" | "regex"; pattern: string; case_sensitive: boolean };

type Preview = {
  output: string | null;
  rule: number | null;
  problems: { message: string; field: string }[];
};

const OUTPUT_RE = /^[A-Za-z_][A-Za-z0-9_]{0,31}$/;

function normalise(raw: unknown[]): Rule[] {
  return raw.map((r) => {
    const rule = (r && typeof r === "object" ? r : {}) as Partial<Rule>;
    return {
      output: typeof rule.output === "string" ? rule.output : "",
      match: rule.match === "regex" ? "regex" : "keyword",
      pattern: typeof rule.pattern === "string" ? rule.pattern : "",
      case_sensitive: rule.case_sensitive === true,
    };
  });
}

function freshOutput(rules: Rule[]): string {
  for (let i = rules.length + 1; ; i++) {
    const name = `route_${i}`;
    if (!rules.some((r) => r.output === name)) return name;
  }
}

export function RouterRules({
  api,
  rules: raw,
  defaultOutput,
  readOnly,
  onChange,
}: {
  api: Api;
  rules: unknown[];
  defaultOutput: string;
  readOnly: boolean;
  onChange: (rules: Rule[]) => void;
}) {
  const uid = useId();
  const rules = normalise(raw);
  const [sample, setSample] = useState("");
  const [preview, setPreview] = useState<Preview | null>(null);
  const [previewError, setPreviewError] = useState<string | null>(null);
  const update = (index: number, patch: Partial<Rule>) =>
    onChange(rules.map((r, i) => (i === index ? { ...r, ...patch } : r)));
  const move = (index: number, by: number) => {
    const next = [...rules];
    const [rule] = next.splice(index, 1);
    next.splice(index + by, 0, rule);
    onChange(next);
  };
  const key = JSON.stringify(rules);

  useEffect(() => {
    if (!sample) {
      setPreview(null);
      return;
    }
    let cancelled = false;
    const timer = setTimeout(() => {
      api
        .post<Preview>("router/preview", { params: { rules, default_output: defaultOutput }, text: sample })
        .then((p) => !cancelled && (setPreview(p), setPreviewError(null)))
        .catch((err: Error) => !cancelled && setPreviewError(`No preview: ${err.message}`));
    }, 250);
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [api, sample, key, defaultOutput]); // eslint-disable-line react-hooks/exhaustive-deps

  return (
    <div className="router-rules" data-testid="router-rules">
      {rules.length === 0 && <p className="muted">No rules yet: everything goes to “{defaultOutput}”.</p>}
      <ol className="rule-list">
        {rules.map((rule, i) => {
          const id = `${uid}-${i}`;
          const badName = rule.output !== "" && !OUTPUT_RE.test(rule.output);
          return (
            <li key={i} className="rule" data-testid={`router-rule-${i}`}>
              <div className="rule-row">
                <label htmlFor={`${id}-output`}>Rule {i + 1} → output</label>
                <input
                  id={`${id}-output`}
                  data-testid={`router-rule-${i}-output`}
                  value={rule.output}
                  disabled={readOnly}
                  maxLength={32}
                  placeholder="e.g. human"
                  onChange={(e) => update(i, { output: e.target.value })}
                />
              </div>
              {badName && (
                <small className="error">Output names use letters, digits or _, and start with a letter or _.</small>
              )}
              <div className="rule-row">
                <label htmlFor={`${id}-match`}>when the input</label>
                <select
                  id={`${id}-match`}
                  data-testid={`router-rule-${i}-match`}
                  value={rule.match}
                  disabled={readOnly}
                  onChange={(e) => update(i, { match: e.target.value as Rule["match"] })}
                >
                  <option value="keyword">contains a keyword</option>
                  <option value="regex">matches a regex (RE2)</option>
                </select>
              </div>
              <input
                aria-label={rule.match === "keyword" ? `Keywords of rule ${i + 1}, separated by commas` : `Regex of rule ${i + 1}`}
                data-testid={`router-rule-${i}-pattern`}
                className="rule-pattern"
                value={rule.pattern}
                disabled={readOnly}
                maxLength={200}
                placeholder={rule.match === "keyword" ? "human, agent, 人工" : "order\\s+#?\\d+"}
                onChange={(e) => update(i, { pattern: e.target.value })}
              />
              <div className="rule-row rule-actions">
                <label className="check">
                  <input
                    type="checkbox"
                    data-testid={`router-rule-${i}-case`}
                    checked={rule.case_sensitive}
                    disabled={readOnly}
                    onChange={(e) => update(i, { case_sensitive: e.target.checked })}
                  />{" "}
                  Match case
                </label>
                {!readOnly && (
                  <span className="rule-buttons">
                    <button type="button" className="secondary small" disabled={i === 0} onClick={() => move(i, -1)} aria-label={`Move rule ${i + 1} up`}>
                      ↑
                    </button>
                    <button type="button" className="secondary small" disabled={i === rules.length - 1} onClick={() => move(i, 1)} aria-label={`Move rule ${i + 1} down`}>
                      ↓
                    </button>
                    <button type="button" className="secondary small" onClick={() => onChange(rules.filter((_, j) => j !== i))} aria-label={`Remove rule ${i + 1}`}>
                      Remove
                    </button>
                  </span>
                )}
              </div>
            </li>
          );
        })}
      </ol>
      {!readOnly && rules.length < 20 && (
        <button
          type="button"
          className="secondary"
          data-testid="router-add-rule"
          onClick={() => onChange([...rules, { output: freshOutput(rules), match: "keyword", pattern: "", case_sensitive: false }])}
        >
          Add rule
        </button>
      )}
      <div className="rule-preview">
        <label htmlFor={`${uid}-sample`}>Try a message</label>
        <input
          id={`${uid}-sample`}
          data-testid="router-sample"
          value={sample}
          maxLength={20000}
          placeholder="e.g. 我要人工客服"
          onChange={(e) => setSample(e.target.value)}
        />
        {previewError && <p className="error">{previewError}</p>}
        {preview && (
          <p className="preview-result" role="status" data-testid="router-preview" data-output={preview.output ?? ""}>
            {preview.problems.length > 0 ? (
              <span className="error">{preview.problems.map((p) => p.message).join(" ")}</span>
            ) : preview.rule ? (
              <>
                Goes to <strong>{preview.output}</strong> (rule {preview.rule} matched).
              </>
            ) : (
              <>
                Goes to <strong>{preview.output}</strong>, the default output (no rule matched).
              </>
            )}
          </p>
        )}
      </div>
    </div>
  );
}
