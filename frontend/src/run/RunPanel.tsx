import { useEffect, useLayoutEffect, useRef, useState } from "react";
import type { Component, GraphEdge, GraphNode } from "../lib/graph";
import { formatDuration } from "../lib/format";
import { failureReason, outputText, retryLabel, type ApprovalAsk, type NodeRun, type RunSnapshot } from "./runStore";
import type { RunControls } from "./useRun";
import { ConnectionBadge } from "./ConnectionBadge";
import { LongText } from "./LongText";

const CHAT_INPUT = "io.chat_input";
const TEXT_OUTPUT = "io.text_output";

type Answer = { id: string; text: string; streaming: boolean; status: string };

/** What the run answers: each text output's value, or, while it is still coming, the
 * streamed text of the node that feeds it. Outputs of branches not taken are left out. */
function answersOf(s: RunSnapshot, nodes: GraphNode[], edges: GraphEdge[]): Answer[] {
  const answers: Answer[] = [];
  for (const n of nodes.filter((n) => n.component === TEXT_OUTPUT)) {
    const own = s.nodes[n.id];
    if (own?.status === "skipped") continue;
    const feeder = edges.find((e) => e.target === n.id)?.source;
    const upstream = feeder ? s.nodes[feeder] : undefined;
    if (own?.output !== undefined && own.status === "done") {
      const streamed = upstream?.text ?? "";
      // Keep revealing the streamed text until the typewriter caught up with it.
      const text = streamed && upstream!.shown < streamed.length ? streamed.slice(0, upstream!.shown) : outputText(own.output);
      answers.push({ id: n.id, text, streaming: text.length < outputText(own.output).length, status: "done" });
    } else if (upstream && upstream.status !== "skipped" && upstream.text) {
      answers.push({ id: n.id, text: upstream.text.slice(0, upstream.shown), streaming: true, status: upstream.status });
    }
  }
  return answers;
}

/** What the answer was drawn from: each retriever's citations (document, page, score),
 * right under the answer. */
function Sources({ s }: { s: RunSnapshot }) {
  const cited = s.retrievals.filter((r) => r.hits.length > 0 || r.notes.length > 0);
  if (!cited.length) return null;
  return (
    <section className="sources" aria-label="Sources" data-testid="sources">
      <h3>Sources</h3>
      {cited.map((r) => (
        <div key={r.seq} className="sources-of" data-testid={`sources-${r.node_id ?? "run"}`}>
          {cited.length > 1 && <code className="answer-from">{r.node_id}</code>}
          {r.notes.map((note, i) => (
            <p key={i} className="muted">
              {note}
            </p>
          ))}
          <ol>
            {r.hits.map((h, i) => (
              <li key={i} data-testid="citation" title={h.excerpt ?? ""}>
                <strong>{h.document ?? h.title}</strong>
                {h.page ? <span>, p. {h.page}</span> : null}
                {typeof h.chunk === "number" ? <small className="muted"> · chunk {h.chunk + 1}</small> : null}
                <small className="muted"> · score {h.score.toFixed(3)}</small>
              </li>
            ))}
          </ol>
        </div>
      ))}
    </section>
  );
}

/** The answer, pinned above everything else and kept scrolled to its end while it grows
 * (unless the reader scrolled up to read). */
function AnswerPanel({ s, answers }: { s: RunSnapshot; answers: Answer[] }) {
  const box = useRef<HTMLDivElement>(null);
  const follow = useRef(true);
  const setTop = useRef(0);
  const reading = useRef(false);
  const length = answers.reduce((n, a) => n + a.text.length, 0);
  const [inner, setInner] = useState<HTMLDivElement | null>(null);
  const toEnd = () => {
    const el = box.current;
    if (el && follow.current) {
      el.scrollTop = el.scrollHeight;
      setTop.current = el.scrollTop;
    }
  };
  useLayoutEffect(toEnd, [length]);
  // Blocks laid out late (off screen until now) change the height without a new token.
  useEffect(() => {
    if (!inner || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() => toEnd());
    observer.observe(inner);
    return () => observer.disconnect();
  }, [inner]); // eslint-disable-line react-hooks/exhaustive-deps
  const active = s.status === "starting" || s.status === "running";
  if (!answers.length && !active) return null;
  return (
    <section className="answer" aria-label="Answer" data-testid="answer" data-status={s.status}>
      <h3>Answer</h3>
      <div
        className="answer-box"
        ref={box}
        // Only the reader's own scrolling (wheel, touch, keys, the scrollbar) stops the
        // following; back at the end, it follows again. Layout moving the scroll position
        // (blocks sized late) is not the reader.
        onWheel={() => (reading.current = true)}
        onTouchMove={() => (reading.current = true)}
        onKeyDown={() => (reading.current = true)}
        onPointerDown={() => (reading.current = true)}
        onScroll={(e) => {
          const el = e.currentTarget;
          if (el.scrollHeight - el.scrollTop - el.clientHeight < 40) follow.current = true;
          else if (reading.current && el.scrollTop < setTop.current - 4) follow.current = false;
          reading.current = false;
          setTop.current = el.scrollTop;
        }}
      >
        <div ref={setInner}>
        {answers.length === 0 && <p className="muted">Waiting for the answer…</p>}
        {answers.map((a) => (
          <div key={a.id} className="answer-text" data-testid={`answer-${a.id}`}>
            {answers.length > 1 && <code className="answer-from">{a.id}</code>}
            <div className="stream">
              <LongText text={a.text} streaming={a.streaming} />
              {a.streaming && active && <span className="caret" aria-hidden="true" />}
            </div>
          </div>
        ))}
        </div>
      </div>
    </section>
  );
}

/** The run view: inputs, Run/Cancel, the answer first, then each node's output, tool
 * calls, errors and outputs. */
export function RunPanel({
  run,
  nodes,
  edges = [],
  catalog,
  canRun,
  onRun,
  runLink,
  watchOnly,
  watchedRunId = null,
}: {
  run: RunControls;
  watchedRunId?: string | null;
  nodes: GraphNode[];
  edges?: GraphEdge[];
  catalog: Map<string, Component>;
  canRun: boolean;
  onRun: (inputs: Record<string, string>) => void;
  runLink: string | null;
  watchOnly: boolean;
}) {
  const { snapshot: s, connection, attempt, rejection } = run;
  const inputNodes = nodes.filter((n) => n.component === CHAT_INPUT);
  const [values, setValues] = useState<Record<string, string>>({});
  const active = s.status === "starting" || s.status === "running";
  // A sub-flow's nodes (`parent.child`) are not on this canvas: their component comes
  // from their `node_started`.
  const label = (id: string) =>
    catalog.get(nodes.find((n) => n.id === id)?.component ?? s.nodes[id]?.component ?? "")?.label ?? id;
  const [showItems, setShowItems] = useState(false);
  const all = [...s.order.filter((id) => id), ...Object.keys(s.nodes).filter((id) => id && !s.order.includes(id))];
  // An iteration's items (`loop.<i>.<node>`) are many: their steps are shown on request.
  const itemSteps = all.filter((id) => /\.\d+\./.test(id));
  const ordered = showItems ? all : all.filter((id) => !/\.\d+\./.test(id));

  return (
    <section className="run-panel" aria-label="Run">
      <div className="run-head">
        <h2>Run</h2>
        {watchOnly && <ConnectionBadge state={connection} attempt={attempt} />}
      </div>
      {!watchOnly && (
        <form
          className="run-inputs"
          onSubmit={(e) => {
            e.preventDefault();
            if (!canRun || active) return;
            onRun(values);
          }}
        >
          {inputNodes.length === 0 && <p className="muted">This flow has no chat input node.</p>}
          {inputNodes.map((n) => (
            <div key={n.id} className="field">
              <label htmlFor={`input-${n.id}`}>{inputNodes.length > 1 ? `Message for ${n.id}` : "Message"}</label>
              <textarea
                id={`input-${n.id}`}
                data-testid={`run-input-${n.id}`}
                rows={3}
                value={values[n.id] ?? ""}
                disabled={!canRun}
                onChange={(e) => setValues({ ...values, [n.id]: e.target.value })}
                onKeyDown={(e) => {
                  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
                    e.preventDefault();
                    if (canRun && !active) onRun(values);
                  }
                }}
              />
            </div>
          ))}
          <div className="buttons">
            <button type="submit" disabled={!canRun || active} data-testid="run-button">
              Run
            </button>
            <button
              type="button"
              className="secondary"
              disabled={!(active || s.status === "waiting") || !canRun}
              onClick={run.cancel}
              data-testid="cancel-button"
            >
              Cancel
            </button>
          </div>
          {!canRun && <p className="muted">Viewers can watch runs but not start them.</p>}
        </form>
      )}
      {watchOnly && (
        <WatchControls
          run={run}
          runId={watchedRunId}
          nodeIds={nodes.map((n) => n.id)}
          canRun={canRun}
          runLink={runLink}
        />
      )}
      {rejection && (
        <div className="run-rejected error" role="alert" data-testid="run-rejected">
          {rejection.message}
        </div>
      )}
      {s.status !== "idle" && (
        <p className="run-status" data-testid="run-status" data-status={s.status} data-last-seq={s.lastSeq}>
          {s.runId ? (
            <>
              Run <code data-testid="run-id">{s.runId.slice(0, 8)}</code>:{" "}
            </>
          ) : (
            "Status: "
          )}
          <strong className={`status-${s.status}`}>{s.status}</strong>
          {s.runId && runLink && (
            <>
              {" · "}
              <a href={runLink.replace("RUN_ID", s.runId)}>run page</a>
            </>
          )}
        </p>
      )}
      {s.approvals.map((ask) => (
        <ApprovalCard key={ask.seq} ask={ask} runId={s.runId} run={run} canDecide={canRun} />
      ))}
      <AnswerPanel s={s} answers={answersOf(s, nodes, edges)} />
      <Sources s={s} />
      {ordered.length > 0 && (
        <details className="run-details" open data-testid="run-details">
          <summary>
            Steps <small className="muted">({ordered.length})</small>
          </summary>
          {itemSteps.length > 0 && (
            <label className="inline muted" data-testid="show-item-steps">
              <input type="checkbox" checked={showItems} onChange={(e) => setShowItems(e.target.checked)} /> Show the
              steps of each iteration item ({itemSteps.length})
            </label>
          )}
          <ol className="run-nodes">
            {ordered.map((id) => {
              const n = s.nodes[id];
              const text = n.text.slice(0, n.shown);
              const finalText = n.text ? "" : outputText(n.output);
              return (
                <li
                  key={id}
                  className={`run-node st-${n.status}${id.includes(".") ? " nested" : ""}`}
                  style={id.includes(".") ? { marginLeft: `${Math.min(3, id.split(".").length - 1) * 14}px` } : undefined}
                  data-testid={`run-node-${id}`}
                >
                  <details open={n.status !== "skipped"}>
                    <summary className="run-node-head">
                      <strong>{label(id)}</strong> <code>{id}</code>
                      <span className={`node-status st-${n.status}`}>{n.status}</span>
                      {n.durationMs !== undefined && <small>{formatDuration(n.durationMs)}</small>}
                      {n.progress && (
                        <small className="iteration-progress" data-testid={`progress-${id}`}>
                          {n.progress.done} of {n.progress.total}
                          {n.progress.failed ? ` · ${n.progress.failed} failed` : ""}
                          <progress value={n.progress.done} max={n.progress.total} />
                        </small>
                      )}
                    </summary>
                    {n.retries?.map((r) => (
                      <p key={r.seq} className="retry-marker" data-testid={`retry-${id}`} title={r.error}>
                        ↻ {retryLabel(r)}
                        {r.delay > 0 && <small> · waited {formatDuration(r.delay * 1000)}</small>}
                      </p>
                    ))}
                    {n.pinnedFrom && (
                      <p className="took-marker pin-marker" data-testid={`pinned-${id}`}>
                        ◉ pinned: the output of run <code>{n.pinnedFrom.slice(0, 8)}</code>, not executed
                      </p>
                    )}
                    {n.took && (
                      <p className="took-marker" data-testid={`took-${id}`} title={n.failure?.message}>
                        {n.took === "error_port" ? "⤷ took its error port" : "⤷ went on with its fallback value"} after{" "}
                        {failureReason(n.failure?.message ?? "", n.failure?.code ?? "")}
                      </p>
                    )}
                    {(text || finalText) && (
                      <div
                        className="stream"
                        data-testid={`output-${id}`}
                        data-received={n.text.length}
                        data-complete={settled(n) && n.shown >= n.text.length ? "true" : "false"}
                      >
                        <LongText text={text || finalText} streaming={n.status === "running"} />
                        {n.status === "running" && <span className="caret" aria-hidden="true" />}
                      </div>
                    )}
                    {n.error && (
                      <p className="error" role="alert">
                        {n.error}
                      </p>
                    )}
                  </details>
                </li>
              );
            })}
          </ol>
        </details>
      )}
      {s.toolCalls.length > 0 && (
        <section className="tool-log" aria-label="Tool calls">
          <h3>Tool calls</h3>
          <ol>
            {s.toolCalls.map((c) => (
              <li key={c.call_id}>
                <code>{c.tool_name}</code> on <code>{c.node_id}</code>
                <pre>{JSON.stringify(c.tool_input)}</pre>
                {c.output !== undefined && <pre className="tool-out">→ {outputText(c.output)}</pre>}
              </li>
            ))}
          </ol>
        </section>
      )}
      {s.errors.length > 0 && (
        <section className="run-errors" aria-label="Errors">
          <h3>Errors</h3>
          <ul>
            {s.errors.map((e) => (
              <li key={e.seq} className="error">
                {e.node_id ? <code>{e.node_id}</code> : "run"}: {e.message}
              </li>
            ))}
          </ul>
        </section>
      )}
      {(s.status === "success" || Object.keys(s.outputs).length > 0) && (
        <section className="final-outputs" aria-label="Outputs" data-testid="final-outputs">
          <h3>Outputs</h3>
          {Object.keys(s.outputs).length === 0
            ? nodes
                .filter((n) => n.component === "io.text_output" && s.nodes[n.id]?.output !== undefined)
                .map((n) => (
                  <div key={n.id} className="stream" data-testid={`final-${n.id}`}>
                    <LongText text={outputText(s.nodes[n.id].output)} streaming={false} />
                  </div>
                ))
            : Object.entries(s.outputs).map(([k, v]) => (
                <div key={k}>
                  <code>{k}</code>
                  <div className="stream" data-testid={`final-${k}`}>
                    <LongText text={outputText(v)} streaming={false} />
                  </div>
                </div>
              ))}
        </section>
      )}
    </section>
  );
}

/** A question the run waits on: what is asked, the value (editable when the node allows),
 * a comment, Approve / Reject; once decided, who decided what. */
export function ApprovalCard({
  ask,
  runId,
  run,
  canDecide,
}: {
  ask: ApprovalAsk;
  runId: string | null;
  run: RunControls;
  canDecide: boolean;
}) {
  const asText = typeof ask.value === "string" ? ask.value : JSON.stringify(ask.value, null, 2);
  const [value, setValue] = useState(asText);
  const [comment, setComment] = useState("");
  const [sent, setSent] = useState<string | null>(null);
  // A refusal (the role, or someone decided first) lets the person try again.
  useEffect(() => setSent(null), [run.rejection]);
  const decide = (decision: "approve" | "reject") => {
    if (!runId) return;
    let edited: unknown = undefined;
    if (decision === "approve" && ask.allow_edit && value !== asText) {
      if (typeof ask.value === "string") edited = value;
      else {
        try {
          edited = JSON.parse(value);
        } catch {
          edited = value;
        }
      }
    }
    run.client.decide(runId, ask.node_id, decision, comment, edited);
    setSent(decision);
  };
  const d = ask.decided;
  return (
    <section
      className={`approval${d ? " decided" : ""}`}
      aria-label="Approval"
      data-testid={`approval-${ask.node_id}`}
      data-state={d ? d.decision : "waiting"}
    >
      <h3>{d ? (d.decision === "approved" ? "Approved" : "Rejected") : "Waiting for approval"}</h3>
      <p className="approval-prompt">{ask.prompt}</p>
      {d ? (
        <p className="muted">
          {d.timed_out ? "Decided by its timeout" : `By ${d.by ?? "someone"}`}
          {d.edited ? ", value edited" : ""}
          {d.comment ? `: “${d.comment}”` : ""}
        </p>
      ) : (
        <form
          className="approval-form"
          onSubmit={(e) => {
            e.preventDefault();
            decide("approve");
          }}
        >
          <label htmlFor={`approval-value-${ask.node_id}`}>{ask.allow_edit ? "Value (you may edit it)" : "Value"}</label>
          <textarea
            id={`approval-value-${ask.node_id}`}
            data-testid={`approval-value-${ask.node_id}`}
            rows={Math.min(8, Math.max(2, value.split("\n").length))}
            value={value}
            readOnly={!ask.allow_edit || !canDecide}
            onChange={(e) => setValue(e.target.value)}
          />
          <label htmlFor={`approval-comment-${ask.node_id}`}>Comment</label>
          <input
            id={`approval-comment-${ask.node_id}`}
            data-testid={`approval-comment-${ask.node_id}`}
            maxLength={2000}
            value={comment}
            disabled={!canDecide}
            onChange={(e) => setComment(e.target.value)}
          />
          {ask.timeout_at && <p className="muted">Decides by itself at {new Date(ask.timeout_at).toLocaleString()}.</p>}
          {canDecide ? (
            <div className="buttons">
              <button type="submit" disabled={sent !== null} data-testid={`approve-${ask.node_id}`}>
                Approve
              </button>
              <button
                type="button"
                className="danger"
                disabled={sent !== null}
                onClick={() => decide("reject")}
                data-testid={`reject-${ask.node_id}`}
              >
                Reject
              </button>
              {ask.role !== "editor" && <small className="muted">Needs the {ask.role} role or above.</small>}
            </div>
          ) : (
            <p className="muted">A member with the {ask.role} role or above decides.</p>
          )}
        </form>
      )}
    </section>
  );
}

/** The node has finished (done, skipped or failed): its text will not grow any more. A
 * typewriter that has caught up with a still-running node is not "complete". */
function settled(n: NodeRun): boolean {
  return n.status !== "queued" && n.status !== "running";
}

function speedValue(speed: string): number | "instant" {
  return speed === "instant" ? "instant" : Number(speed);
}

/** On the run page: replay the finished run from its log (with pause and seek), or run it
 * again — from the start, or from one node with everything else taken from this run's log. */
function WatchControls({
  run,
  runId,
  nodeIds,
  canRun,
  runLink,
}: {
  run: RunControls;
  runId: string | null;
  nodeIds: string[];
  canRun: boolean;
  runLink: string | null;
}) {
  const [speed, setSpeed] = useState("4");
  const [rerunId, setRerunId] = useState<string | null>(null);
  const [fromNode, setFromNode] = useState("");
  const [seekTo, setSeekTo] = useState(0);
  const [total, setTotal] = useState(0); // the run's last seq, known before a replay resets the view
  const s = run.snapshot;
  const finished = s.status === "success" || s.status === "error" || s.status === "cancelled";
  const replaying = run.replayState === "playing" || run.replayState === "paused";
  const source = runId;
  // Once a re-run streams here, the page's header (rendered by the server) still describes
  // the original run: say so there, and say here which run is shown.
  useEffect(() => {
    if (!rerunId) return;
    const meta = document.querySelector(".run-meta");
    meta?.setAttribute("data-superseded", "");
    meta?.setAttribute("title", "These details are of the original run; the re-run is shown below.");
    document.title = `Re-run ${rerunId.slice(0, 8)} · ${document.title.replace(/^Re-run \S+ · /, "")}`;
  }, [rerunId]);
  if (!source) return null;
  return (
    <>
    {rerunId && (
      <p className="rerun-banner" role="status" data-testid="rerun-banner">
        Showing the re-run <code>{rerunId.slice(0, 8)}</code> of run <code>{source.slice(0, 8)}</code>; the
        details above the canvas are the original run's.{" "}
        {runLink && <a href={runLink.replace("RUN_ID", rerunId)}>Open the re-run's page</a>}
      </p>
    )}
    <div className="watch-controls" aria-label="Replay">
      <label className="inline-label" htmlFor="replay-speed">
        Speed
      </label>
      <select id="replay-speed" value={speed} onChange={(e) => setSpeed(e.target.value)}>
        <option value="1">1×</option>
        <option value="4">4×</option>
        <option value="instant">instant</option>
      </select>
      <button
        type="button"
        className="secondary"
        data-testid="replay-button"
        disabled={(!finished && !replaying) || rerunId !== null}
        onClick={() => {
          setTotal((t) => Math.max(t, s.lastSeq));
          run.replay(source, speedValue(speed), nodeIds);
        }}
      >
        Replay
      </button>
      {replaying && total > 0 && (
        <>
          <label className="inline-label" htmlFor="replay-seek">
            Seek
          </label>
          <input
            id="replay-seek"
            data-testid="replay-seek"
            type="range"
            min={0}
            max={total}
            value={seekTo}
            onChange={(e) => setSeekTo(Number(e.target.value))}
            onMouseUp={() => run.replay(source, speedValue(speed), nodeIds, seekTo)}
            onKeyUp={(e) => {
              if (e.key === "Enter") run.replay(source, speedValue(speed), nodeIds, seekTo);
            }}
          />
        </>
      )}
      {replaying && (
        <button
          type="button"
          className="secondary"
          data-testid="replay-pause"
          onClick={run.replayState === "playing" ? run.replayPause : run.replayPlay}
        >
          {run.replayState === "playing" ? "Pause" : "Play"}
        </button>
      )}
      {canRun && (s.status === "running" || s.status === "starting") && !replaying && (
        <button type="button" className="danger" data-testid="cancel-button" onClick={run.cancel}>
          Cancel
        </button>
      )}
      {canRun && (
        <>
          <label className="inline-label" htmlFor="rerun-from">
            from
          </label>
          <select
            id="rerun-from"
            data-testid="rerun-from"
            value={fromNode}
            onChange={(e) => setFromNode(e.target.value)}
            title="Nodes outside the chosen node's downstream reuse this run's recorded outputs"
          >
            <option value="">the start</option>
            {nodeIds.map((id) => (
              <option key={id} value={id}>
                {id}
              </option>
            ))}
          </select>
          <button
            type="button"
            data-testid="rerun-button"
            disabled={!finished || replaying}
            onClick={async () => {
              const id = await run.rerun(source, nodeIds, fromNode || undefined);
              if (id) setRerunId(id);
            }}
          >
            Re-run
          </button>
        </>
      )}
      {run.replayState !== "idle" && (
        <span className="muted" data-testid="replay-state">
          replay {run.replayState}
        </span>
      )}
      {rerunId && runLink && (
        <a href={runLink.replace("RUN_ID", rerunId)} data-testid="rerun-link">
          the new run
        </a>
      )}
    </div>
    </>
  );
}
