import { useEffect, useId, useRef, useState } from "react";
import { templateVariables, type Component, type JsonSchema, type NodePolicy, type Pin } from "../lib/graph";
import { PinSection } from "./PinSection";
import { PolicySection } from "./PolicySection";
import { RouterRules } from "./RouterRules";
import { SubflowPicker } from "./SubflowPicker";
import type { Api } from "../lib/api";

export type Credential = { id: number | string; name?: string; provider: string; base_url?: string };
/** A knowledge base as GET knowledge-bases lists it (what the picker needs of it). */
export type KnowledgeBaseOption = { id: number; name: string; modes?: string[]; document_count?: number };

/** Text longer than this in a field with no limit of its own is refused: typing in a
 * multi-megabyte textarea is no way to write a prompt, and it stalls the page. */
export const DEFAULT_TEXT_LIMIT = 50_000;

function widgetOf(key: string, prop: JsonSchema, componentKey: string): string {
  if (componentKey === "logic.router" && key === "rules") return "router-rules";
  const explicit = (prop["x-widget"] ?? prop.widget ?? prop.format) as string | undefined;
  if (explicit === "credential" || key === "credential" || key === "credential_id") return "credential";
  if (explicit === "knowledge_base") return "knowledge-base";
  // A prompt template (by widget or by name) shows the variables it will take.
  if (explicit === "prompt" || explicit === "template" || key === "template" || key === "prompt") return "prompt";
  if (explicit === "textarea" || explicit === "multiline") return "multiline";
  const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
  const variant = (prop.anyOf ?? prop.oneOf)?.find((s) => s.type !== "null");
  if (prop.enum || variant?.enum) return "select";
  const t = type ?? variant?.type;
  if (t === "boolean") return "boolean";
  if (t === "integer" || t === "number") return "number";
  if (["reply", "text", "instructions", "system_prompt", "system", "content"].includes(key)) return "multiline";
  if (t === "string" || t === undefined) return "text";
  return "json";
}

function limitOf(prop: JsonSchema): number {
  const max = typeof prop.maxLength === "number" ? prop.maxLength : undefined;
  const variant = (prop.anyOf ?? prop.oneOf)?.find((s) => typeof s.maxLength === "number");
  return Math.min(max ?? (variant?.maxLength as number | undefined) ?? DEFAULT_TEXT_LIMIT, DEFAULT_TEXT_LIMIT * 4);
}

function shownDefault(prop: JsonSchema): string | undefined {
  if (prop.default === undefined || prop.default === null || prop.default === "") return undefined;
  return typeof prop.default === "string" ? prop.default : JSON.stringify(prop.default);
}

/**
 * A text field that keeps its own text while the user types and hands it to the graph a
 * moment later (and on leaving the field), so a keystroke never waits for the canvas,
 * validation and the draft save. Longer than `limit`: cut, with a sentence saying so.
 */
function TextField({
  id,
  name,
  value,
  limit,
  multiline,
  rows,
  disabled,
  placeholder,
  onCommit,
  below,
}: {
  id: string;
  name: string;
  value: string;
  limit: number;
  multiline: boolean;
  rows: number;
  disabled: boolean;
  placeholder?: string;
  onCommit: (text: string) => void;
  /** What to show under the field for the text as typed (a template's variables). */
  below?: (text: string) => React.ReactNode;
}) {
  const [text, setText] = useState(value);
  const [cut, setCut] = useState<string | null>(null);
  const committed = useRef(value);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const pendingText = useRef<string | null>(null);
  const commitRef = useRef(onCommit);
  commitRef.current = onCommit;

  // A change from outside (undo, a version loaded): show it.
  useEffect(() => {
    if (value !== committed.current) {
      committed.current = value;
      setText(value);
    }
  }, [value]);

  const flush = () => {
    if (timer.current) clearTimeout(timer.current);
    timer.current = null;
    const next = pendingText.current;
    pendingText.current = null;
    if (next !== null && next !== committed.current) {
      committed.current = next;
      commitRef.current(next);
    }
  };
  // Leaving the node (another one selected): keep what was typed.
  useEffect(() => () => flush(), []); // eslint-disable-line react-hooks/exhaustive-deps

  const change = (raw: string) => {
    let next = raw;
    if (next.length > limit) {
      next = next.slice(0, limit);
      setCut(`This field takes at most ${limit.toLocaleString("en")} characters: the rest was cut.`);
    }
    setText(next);
    pendingText.current = next;
    if (timer.current) clearTimeout(timer.current);
    timer.current = setTimeout(flush, next.length > 5_000 ? 400 : 150);
  };

  const paste = (e: React.ClipboardEvent<HTMLTextAreaElement | HTMLInputElement>) => {
    const pasted = e.clipboardData.getData("text");
    const el = e.currentTarget;
    const start = el.selectionStart ?? text.length;
    const end = el.selectionEnd ?? text.length;
    const room = limit - (text.length - (end - start));
    if (pasted.length <= room) return;
    // Cut the paste ourselves (before the browser lays out a huge value) and say so.
    e.preventDefault();
    const kept = pasted.slice(0, Math.max(0, room));
    setCut(
      `The pasted text had ${pasted.length.toLocaleString("en")} characters; this field takes at most ${limit.toLocaleString("en")}, so ${(pasted.length - kept.length).toLocaleString("en")} were left out.`,
    );
    change(text.slice(0, start) + kept + text.slice(end));
  };

  const common = {
    id,
    name,
    disabled,
    placeholder,
    maxLength: limit,
    value: text,
    "data-param": name,
    onPaste: paste,
    onBlur: flush,
  };
  return (
    <>
      {multiline ? (
        <textarea {...common} rows={rows} onChange={(e) => change(e.target.value)} />
      ) : (
        <input {...common} type="text" onChange={(e) => change(e.target.value)} />
      )}
      {below?.(text)}
      {text.length > limit * 0.8 && (
        <small className="counter" data-testid={`counter-${name}`}>
          {text.length.toLocaleString("en")} / {limit.toLocaleString("en")} characters
        </small>
      )}
      {cut && (
        <p className="field-note warn" role="status" data-testid={`cut-${name}`}>
          {cut}
        </p>
      )}
    </>
  );
}

/** A form for one node's parameters, generated from its component's JSON Schema. */
export function ParamPanel({
  nodeId,
  component,
  params,
  readOnly,
  credentials,
  credentialsUrl,
  knowledgeBases = [],
  knowledgeUrl,
  problems,
  api,
  onChange,
  onConnect,
  policy,
  onPolicyChange,
  pinned,
  pinAvailable = null,
  onPinChange,
}: {
  nodeId: string;
  component: Component;
  params: Record<string, unknown>;
  /** The node's policy (retries, timeout, on failure); the section is shown with onPolicyChange. */
  policy?: NodePolicy;
  onPolicyChange?: (policy: NodePolicy | undefined) => void;
  /** The node's pin, and the run it could be pinned to; the section is shown with onPinChange. */
  pinned?: Pin;
  pinAvailable?: string | null;
  onPinChange?: (pin: Pin | undefined) => void;
  readOnly: boolean;
  credentials: Credential[];
  credentialsUrl?: string;
  knowledgeBases?: KnowledgeBaseOption[];
  knowledgeUrl?: string;
  problems: string[];
  api: Api;
  onChange: (params: Record<string, unknown>) => void;
  onConnect?: () => void;
}) {
  const uid = useId();
  // A sub-flow's params are set together by its picker (the flow and its ports).
  const subflow = ["flow.subflow", "flow.iterate", "flow.loop"].includes(component.key);
  const picked = new Set(["flow", "version", "inputs", "outputs"]);
  const properties = Object.entries(component.params?.properties ?? {}).filter(([key]) => !subflow || !picked.has(key));
  const required = new Set(component.params?.required ?? []);
  const latest = useRef(params);
  latest.current = params;
  /** Set one param. An emptied text stays empty (""): a default applies only to a param
   * that was never set, never to one the user cleared. */
  const set = (key: string, value: unknown) => {
    const next = { ...latest.current };
    if (value === undefined) delete next[key];
    else next[key] = value;
    latest.current = next;
    onChange(next);
  };

  return (
    <form className="params" aria-label={`Parameters of ${nodeId}`} onSubmit={(e) => e.preventDefault()}>
      <div className="params-head">
        <h2>{component.label}</h2>
        {!readOnly && onConnect && (
          <button type="button" className="secondary small" onClick={onConnect} data-testid="connect-open" title="Connect a port of this node (C)">
            Connect…
          </button>
        )}
      </div>
      <p className="muted">
        <code>{nodeId}</code> · {component.description}
      </p>
      {problems.length > 0 && (
        <ul className="problems" role="alert" data-testid="node-problems">
          {problems.map((p, i) => (
            <li key={i}>{p}</li>
          ))}
        </ul>
      )}
      {subflow && (
        <SubflowPicker
          api={api}
          params={params}
          readOnly={readOnly}
          onChange={(next) => {
            latest.current = next;
            onChange(next);
          }}
        />
      )}
      {properties.length === 0 && !subflow && <p className="muted">No parameters.</p>}
      {properties.map(([key, prop]) => {
        const id = `${uid}-${key}`;
        const widget = widgetOf(key, prop, component.key);
        const label = `${prop.title ?? key}${required.has(key) ? " *" : ""}`;
        const set_ = key in params;
        const value = set_ ? params[key] : undefined;
        const fallback = shownDefault(prop);
        const placeholder = fallback !== undefined ? `${fallback.length > 60 ? fallback.slice(0, 60) + "…" : fallback} (default)` : undefined;
        const common = { id, name: key, disabled: readOnly, "data-param": key };
        let field: React.ReactNode;
        if (widget === "router-rules") {
          field = (
            <RouterRules
              api={api}
              rules={Array.isArray(value) ? value : []}
              defaultOutput={typeof params.default_output === "string" ? params.default_output : "default"}
              readOnly={readOnly}
              onChange={(rules) => set(key, rules)}
            />
          );
        } else if (widget === "boolean") {
          const checked = value === undefined ? Boolean(prop.default) : Boolean(value);
          field = <input {...common} type="checkbox" checked={checked} onChange={(e) => set(key, e.target.checked)} />;
        } else if (widget === "number") {
          field = (
            <input
              {...common}
              type="number"
              min={prop.minimum}
              max={prop.maximum}
              step={prop.type === "integer" ? 1 : "any"}
              placeholder={placeholder}
              value={value === undefined || value === null ? "" : String(value)}
              // Empty: not set (the component's default applies, shown as the placeholder).
              onChange={(e) => set(key, e.target.value === "" ? undefined : Number(e.target.value))}
            />
          );
        } else if (widget === "select") {
          const options = prop.enum ?? (prop.anyOf ?? prop.oneOf)?.find((s) => s.enum)?.enum ?? [];
          const shown = value === undefined ? (prop.default ?? "") : value;
          field = (
            <select {...common} value={String(shown)} onChange={(e) => set(key, e.target.value === "" ? undefined : e.target.value)}>
              {!required.has(key) && <option value="">—</option>}
              {options.map((o) => (
                <option key={String(o)} value={String(o)}>
                  {String(o)}
                </option>
              ))}
            </select>
          );
        } else if (widget === "credential") {
          field = (
            <>
              <select
                {...common}
                value={value === undefined || value === null ? "" : String(value)}
                onChange={(e) => {
                  const raw = e.target.value;
                  const match = credentials.find((c) => String(c.id) === raw);
                  set(key, raw === "" ? undefined : typeof match?.id === "number" ? match.id : raw);
                }}
              >
                <option value="">— choose a credential —</option>
                {credentials.map((c) => (
                  <option key={String(c.id)} value={String(c.id)}>
                    {c.name || c.provider}
                    {c.base_url ? ` (${c.base_url})` : ""}
                  </option>
                ))}
              </select>
              {credentialsUrl && (
                <a className="field-link" href={credentialsUrl} target="_blank" rel="noopener" data-testid="manage-credentials">
                  {credentials.length ? "Manage credentials" : "Add a credential"}
                </a>
              )}
            </>
          );
        } else if (widget === "knowledge-base") {
          // Picked from this workspace's knowledge bases: no typed names or ids.
          const known = knowledgeBases.some((kb) => kb.id === value);
          field = (
            <>
              <select
                {...common}
                value={value === undefined || value === null ? "" : String(value)}
                onChange={(e) => set(key, e.target.value === "" ? undefined : Number(e.target.value))}
              >
                <option value="">— choose a knowledge base —</option>
                {value !== undefined && value !== null && !known && (
                  <option value={String(value)}>#{String(value)} (not in this workspace)</option>
                )}
                {knowledgeBases.map((kb) => (
                  <option key={kb.id} value={String(kb.id)}>
                    {kb.name}
                    {kb.modes && !kb.modes.includes("vector") ? " (keyword only)" : ""}
                  </option>
                ))}
              </select>
              {knowledgeUrl && (
                <a className="field-link" href={knowledgeUrl} target="_blank" rel="noopener" data-testid="manage-knowledge">
                  {knowledgeBases.length ? "Manage knowledge bases" : "Add a knowledge base"}
                </a>
              )}
            </>
          );
        } else if (widget === "prompt" || widget === "multiline" || widget === "text") {
          const text = typeof value === "string" ? value : "";
          field = (
            <TextField
              id={id}
              name={key}
              value={text}
              limit={limitOf(prop)}
              multiline={widget !== "text"}
              rows={widget === "prompt" ? 6 : 4}
              disabled={readOnly}
              placeholder={placeholder}
              onCommit={(t) => set(key, t)}
              below={
                widget === "prompt"
                  ? (typed) => {
                      const vars = templateVariables(typed);
                      return (
                        <p className="vars" data-testid={`vars-${key}`}>
                          Variables: {vars.length ? vars.map((v) => <code key={v}>{v}</code>) : <em>none</em>}
                        </p>
                      );
                    }
                  : undefined
              }
            />
          );
        } else {
          field = (
            <textarea
              {...common}
              rows={3}
              defaultValue={value === undefined ? "" : JSON.stringify(value)}
              onBlur={(e) => {
                try {
                  set(key, e.target.value ? JSON.parse(e.target.value) : undefined);
                } catch {
                  /* keep the last valid value */
                }
              }}
            />
          );
        }
        return (
          <div className={`field field-${widget}`} key={key}>
            <label htmlFor={widget === "router-rules" ? undefined : id}>{label}</label>
            {field}
            {prop.description && <small className="muted">{prop.description}</small>}
          </div>
        );
      })}
      {onPolicyChange && <PolicySection policy={policy} readOnly={readOnly} onChange={onPolicyChange} />}
      {onPinChange && <PinSection pinned={pinned} available={pinAvailable} readOnly={readOnly} onChange={onPinChange} />}
    </form>
  );
}
