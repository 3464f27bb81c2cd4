/**
 * The chat playground: a conversation with a flow, each message a run of it (the next
 * turn of the conversation, in its session), followed over the same protocol client as
 * the editor, so a dropped connection resumes exactly where it stopped.
 */
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { Api, ApiError } from "../lib/api";
import type { IslandConfig } from "../lib/config";
import { ConnectionBadge } from "../run/ConnectionBadge";
import { ApprovalCard } from "../run/RunPanel";
import { useRun } from "../run/useRun";
import type { Retrieval, ToolCall } from "../run/runStore";
import { renderMarkdown } from "./markdown";
import { foldTranscript, lastUserInputs, type ChatMessage, type LiveTurn, type RecordedTurn } from "./transcript";

export type ConversationDetail = { id: string; title: string; turns: number; turn_list: RecordedTurn[] };

type Props = {
  config: IslandConfig;
  /** The flow's chat input nodes: one gets a chat box, several a small form. */
  inputIds: string[];
  conversationId: string | null;
  onConversation: (id: string) => void;
  /** A turn was added or finished: the list around may want to show it. */
  onChanged?: () => void;
};

function json(value: unknown): string {
  try {
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

function ToolSteps({ calls }: { calls: ToolCall[] }) {
  if (!calls.length) return null;
  return (
    <div className="chat-tools" data-testid="chat-tools">
      {calls.map((c) => (
        <details key={c.call_id} className="chat-tool" data-testid="chat-tool">
          <summary>
            Tool <code>{c.tool_name}</code> {c.output === undefined ? "(running…)" : ""}
          </summary>
          <pre>{json(c.tool_input)}</pre>
          {c.output !== undefined && <pre>{json(c.output)}</pre>}
        </details>
      ))}
    </div>
  );
}

function Citations({ retrievals }: { retrievals: Retrieval[] }) {
  const hits = retrievals.flatMap((r) => r.hits);
  if (!hits.length) return null;
  return (
    <div className="chat-sources" data-testid="chat-sources">
      <strong>Sources</strong>
      <ol>
        {hits.map((h, i) => (
          <li key={i} data-testid="chat-citation" title={h.excerpt ?? ""}>
            {h.document ?? h.title}
            {h.page ? `, p. ${h.page}` : ""} <small className="muted">· score {h.score.toFixed(3)}</small>
          </li>
        ))}
      </ol>
    </div>
  );
}

function Answer({ m, runUrl }: { m: Extract<ChatMessage, { role: "assistant" }>; runUrl: string | null }) {
  const html = useMemo(() => renderMarkdown(m.text), [m.text]);
  const active = m.status === "starting" || m.status === "running";
  return (
    <div className="chat-msg chat-assistant" data-testid="chat-answer" data-run={m.runId ?? ""} data-status={m.status}>
      <ToolSteps calls={m.toolCalls} />
      {m.text ? (
        <div className="chat-md" data-testid="chat-answer-text" data-chars={m.text.length} dangerouslySetInnerHTML={{ __html: html }} />
      ) : active ? (
        <p className="muted">Thinking…</p>
      ) : null}
      {m.streaming && active && <span className="caret" aria-hidden="true" />}
      {m.error && (
        <p className="error" role="alert">
          {m.error}
        </p>
      )}
      <Citations retrievals={m.retrievals} />
      <div className="chat-meta">
        {m.status === "cancelled" && <span className="muted">Stopped. </span>}
        {runUrl && (
          <a href={runUrl} data-testid="chat-trace" target="_blank" rel="noopener">
            Trace
          </a>
        )}
      </div>
    </div>
  );
}

export function Playground({ config, inputIds, conversationId, onConversation, onChanged }: Props) {
  const api = useMemo(() => new Api(config.apiBase), [config.apiBase]);
  const run = useRun(config.wsPath);
  const [recorded, setRecorded] = useState<RecordedTurn[]>([]);
  const [live, setLive] = useState<Omit<LiveTurn, "snapshot"> | null>(null);
  const [draft, setDraft] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const loadedFor = useRef<string | null>(null);
  const scroller = useRef<HTMLDivElement>(null);

  const load = useCallback(
    async (id: string) => {
      try {
        const detail = await api.get<ConversationDetail>(`conversations/${id}`);
        if (loadedFor.current === id) setRecorded(detail.turn_list);
      } catch (err) {
        setError(err instanceof ApiError ? err.message : String(err));
      }
    },
    [api],
  );

  // Another conversation picked: its turns, and no live run from the one before.
  useEffect(() => {
    if (conversationId === loadedFor.current) return;
    loadedFor.current = conversationId;
    setRecorded([]);
    if (!sending) setLive(null);
    if (conversationId) void load(conversationId);
  }, [conversationId, load]); // eslint-disable-line react-hooks/exhaustive-deps

  const s = run.snapshot;
  const ended = s.status === "success" || s.status === "error" || s.status === "cancelled";
  // A turn ended: list it as recorded (its answer, its status) and tell the page.
  useEffect(() => {
    if (ended && conversationId && s.runId) {
      void load(conversationId);
      onChanged?.();
    }
  }, [ended, s.runId]); // eslint-disable-line react-hooks/exhaustive-deps

  const messages = useMemo(
    () => foldTranscript(recorded, live ? { ...live, snapshot: s } : null),
    [recorded, live, s],
  );

  useLayoutEffect(() => {
    const el = scroller.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [messages]);

  const busy = sending || s.status === "starting" || s.status === "running" || s.status === "waiting";

  const send = async (inputs: Record<string, string>) => {
    if (!config.flowId || busy) return;
    setError(null);
    setSending(true);
    try {
      let id = conversationId;
      if (!id) {
        const created = await api.post<{ id: string }>(`flows/${config.flowId}/conversations`, {});
        id = created.id;
        loadedFor.current = id;
        setRecorded([]);
        onConversation(id);
      }
      setLive({ inputs });
      const runId = await run.start({ flow: config.flowId, inputs, conversation: id }, []);
      if (runId) {
        setDraft({});
        onChanged?.();
      }
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setSending(false);
    }
  };

  const submit = (e?: React.FormEvent) => {
    e?.preventDefault();
    const inputs = Object.fromEntries(inputIds.map((id) => [id, draft[id] ?? ""]));
    if (inputIds.every((id) => !inputs[id].trim())) return;
    void send(inputs);
  };

  const regenerate = () => {
    const inputs = lastUserInputs(recorded, live ? { ...live, snapshot: s } : null);
    if (inputs) void send(inputs);
  };

  const runUrl = (runId: string | null) => (runId ? config.runUrlTemplate.replace("RUN_ID", runId) : null);
  const canRegenerate = !busy && messages.some((m) => m.role === "user");

  return (
    <section className="playground" aria-label="Chat" data-testid="playground">
      <div className="chat-head">
        <ConnectionBadge state={run.connection} attempt={run.attempt} />
        <div className="spacer" />
        {busy ? (
          <button type="button" onClick={run.cancel} data-testid="chat-stop" disabled={!s.runId}>
            Stop
          </button>
        ) : (
          <button type="button" className="secondary" onClick={regenerate} disabled={!canRegenerate || !config.canRun} data-testid="chat-regenerate">
            Regenerate
          </button>
        )}
      </div>
      <div className="chat-transcript" ref={scroller} data-testid="chat-transcript">
        {messages.length === 0 && (
          <p className="muted">
            {inputIds.length ? "Send a message: each one runs the flow as the next turn of this conversation." : "This flow has no chat input node to talk to."}
          </p>
        )}
        {messages.map((m) =>
          m.role === "user" ? (
            <div key={m.key} className="chat-msg chat-user" data-testid="chat-user">
              {m.text}
            </div>
          ) : (
            <Answer key={m.key} m={m} runUrl={runUrl(m.runId)} />
          ),
        )}
        {live &&
          s.approvals
            .filter((ask) => !ask.decided)
            .map((ask) => <ApprovalCard key={ask.seq} ask={ask} runId={s.runId} run={run} canDecide={config.canRun} />)}
      </div>
      {(error || run.rejection) && (
        <p className="error" role="alert" data-testid="chat-error">
          {error ?? run.rejection?.message}
        </p>
      )}
      {inputIds.length > 0 && config.canRun && (
        <form className={inputIds.length > 1 ? "chat-form several" : "chat-form"} onSubmit={submit} data-testid="chat-form">
          {inputIds.map((id) => (
            <label key={id} className="chat-field">
              {inputIds.length > 1 && <span>{id}</span>}
              <textarea
                rows={inputIds.length > 1 ? 1 : 2}
                value={draft[id] ?? ""}
                aria-label={inputIds.length > 1 ? id : "Message"}
                data-testid={`chat-input-${id}`}
                placeholder={inputIds.length > 1 ? "" : "Message…"}
                onChange={(e) => setDraft((d) => ({ ...d, [id]: e.target.value }))}
                onKeyDown={(e) => {
                  if (e.key === "Enter" && !e.shiftKey && inputIds.length === 1) {
                    e.preventDefault();
                    submit();
                  }
                }}
              />
            </label>
          ))}
          <button type="submit" className="primary" disabled={busy} data-testid="chat-send">
            Send
          </button>
        </form>
      )}
    </section>
  );
}
