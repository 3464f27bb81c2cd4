import { useId } from "react";
import { templateVariables, type Component, type JsonSchema } from "../lib/graph";

export type Credential = { id: number | string; name?: string; provider: string; base_url?: string };

function widgetOf(key: string, prop: JsonSchema): string {
  const explicit = (prop["x-widget"] ?? prop.widget ?? prop.format) as string | undefined;
  if (explicit === "credential" || key === "credential" || key === "credential_id") return "credential";
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

/** A form for one node's parameters, generated from its component's JSON Schema. */
export function ParamPanel({
  nodeId,
  component,
  params,
  readOnly,
  credentials,
  problems,
  onChange,
}: {
  nodeId: string;
  component: Component;
  params: Record<string, unknown>;
  readOnly: boolean;
  credentials: Credential[];
  problems: string[];
  onChange: (params: Record<string, unknown>) => void;
}) {
  const uid = useId();
  const properties = Object.entries(component.params?.properties ?? {});
  const required = new Set(component.params?.required ?? []);
  const set = (key: string, value: unknown) => {
    const next = { ...params };
    if (value === undefined || value === "") delete next[key];
    else next[key] = value;
    onChange(next);
  };

  return (
    <form className="params" aria-label={`Parameters of ${nodeId}`} onSubmit={(e) => e.preventDefault()}>
      <h2>{component.label}</h2>
      <p className="muted">
        <code>{nodeId}</code> · {component.description}
      </p>
      {problems.length > 0 && (
        <ul className="problems" role="alert">
          {problems.map((p, i) => (
            <li key={i}>{p}</li>
          ))}
        </ul>
      )}
      {properties.length === 0 && <p className="muted">No parameters.</p>}
      {properties.map(([key, prop]) => {
        const id = `${uid}-${key}`;
        const widget = widgetOf(key, prop);
        const label = `${prop.title ?? key}${required.has(key) ? " *" : ""}`;
        const value = params[key] ?? prop.default;
        const common = { id, name: key, disabled: readOnly, "data-param": key };
        let field: React.ReactNode;
        if (widget === "boolean") {
          field = (
            <input {...common} type="checkbox" checked={Boolean(value)} onChange={(e) => set(key, e.target.checked)} />
          );
        } else if (widget === "number") {
          field = (
            <input
              {...common}
              type="number"
              min={prop.minimum}
              max={prop.maximum}
              step={prop.type === "integer" ? 1 : "any"}
              value={value === undefined || value === null ? "" : String(value)}
              onChange={(e) => set(key, e.target.value === "" ? undefined : Number(e.target.value))}
            />
          );
        } else if (widget === "select") {
          const options = prop.enum ?? (prop.anyOf ?? prop.oneOf)?.find((s) => s.enum)?.enum ?? [];
          field = (
            <select {...common} value={value === undefined ? "" : String(value)} onChange={(e) => set(key, e.target.value)}>
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
          );
        } else if (widget === "prompt" || widget === "multiline") {
          const text = typeof value === "string" ? value : "";
          const vars = widget === "prompt" ? templateVariables(text) : [];
          field = (
            <>
              <textarea {...common} rows={widget === "prompt" ? 6 : 4} value={text} onChange={(e) => set(key, e.target.value)} />
              {widget === "prompt" && (
                <p className="vars" data-testid={`vars-${key}`}>
                  Variables: {vars.length ? vars.map((v) => <code key={v}>{v}</code>) : <em>none</em>}
                </p>
              )}
            </>
          );
        } else if (widget === "json") {
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
        } else {
          field = (
            <input {...common} type="text" value={value === undefined || value === null ? "" : String(value)} onChange={(e) => set(key, e.target.value)} />
          );
        }
        return (
          <div className={`field field-${widget}`} key={key}>
            <label htmlFor={id}>{label}</label>
            {field}
            {prop.description && <small className="muted">{prop.description}</small>}
          </div>
        );
      })}
    </form>
  );
}
