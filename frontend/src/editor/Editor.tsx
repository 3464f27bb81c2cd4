import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  addEdge,
  useEdgesState,
  useNodesState,
  useReactFlow,
  type Connection,
  type Edge,
  type IsValidConnection,
} from "@xyflow/react";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Api, ApiError } from "../lib/api";
import type { IslandConfig } from "../lib/config";
import {
  defaultParams,
  edgeId,
  newNodeId,
  portsOf,
  toFlow,
  toGraph,
  typesCompatible,
  typeColour,
  type Component,
  type FlowNode,
  type Graph,
} from "../lib/graph";
import { ConnectionBadge } from "../run/ConnectionBadge";
import { RunPanel } from "../run/RunPanel";
import { useRun } from "../run/useRun";
import { CatalogContext, ProblemsContext, RunViewContext } from "./contexts";
import { NodeCard } from "./NodeCard";
import { DRAG_TYPE, Palette } from "./Palette";
import { ParamPanel, type Credential } from "./ParamPanel";
import { VersionsPanel, type VersionDiff, type VersionInfo } from "./VersionsPanel";
import { problemsByNode, type Problem } from "./problems";

const nodeTypes = { component: NodeCard };

type Tab = "node" | "run" | "versions";

function asList<T>(data: unknown, key: string): T[] {
  if (Array.isArray(data)) return data as T[];
  if (data && typeof data === "object" && Array.isArray((data as Record<string, unknown>)[key])) {
    return (data as Record<string, T[]>)[key];
  }
  return [];
}

function isTyping(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  if (!el) return false;
  return el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName);
}

export type EditorProps = {
  config: IslandConfig & { graph?: Graph; versions?: VersionInfo[] };
};

export function EditorIsland({ config }: EditorProps) {
  return (
    <ReactFlowProvider>
      <Editor config={config} />
    </ReactFlowProvider>
  );
}

function Editor({ config }: EditorProps) {
  const api = useMemo(() => new Api(config.apiBase), [config.apiBase]);
  const watchOnly = config.mode === "run";
  const readOnly = watchOnly || !config.canEdit;
  const initial = useMemo(() => toFlow(config.graph ?? { nodes: [], edges: [] }), [config.graph]);
  const [nodes, setNodes, onNodesChange] = useNodesState<FlowNode>(initial.nodes);
  const [edges, setEdges, onEdgesChange] = useEdgesState<Edge>(initial.edges);
  const [components, setComponents] = useState<Component[]>([]);
  const [catalogError, setCatalogError] = useState<string | null>(null);
  const [credentials, setCredentials] = useState<Credential[]>([]);
  const [problems, setProblems] = useState<Problem[]>([]);
  const [tab, setTab] = useState<Tab>(watchOnly ? "run" : "node");
  const [selected, setSelected] = useState<string | null>(null);
  const selectedRef = useRef<string | null>(null);
  const [savedJson, setSavedJson] = useState(() => JSON.stringify(toGraph(initial.nodes, initial.edges)));
  const [version, setVersion] = useState<number | null>(config.version);
  const [versions, setVersions] = useState<VersionInfo[]>(config.versions ?? []);
  const [note, setNote] = useState("");
  const [saveState, setSaveState] = useState<{ kind: "ok" | "error" | "busy"; text: string } | null>(null);
  const past = useRef<Graph[]>([]);
  const future = useRef<Graph[]>([]);
  const clipboard = useRef<Graph | null>(null);
  const lastParamCheckpoint = useRef<{ node: string; at: number } | null>(null);
  const wrapper = useRef<HTMLDivElement>(null);
  const flow = useReactFlow<FlowNode, Edge>();
  const run = useRun(config.wsPath);

  const catalog = useMemo(() => new Map(components.map((c) => [c.key, c])), [components]);
  const graph = useMemo(() => toGraph(nodes, edges), [nodes, edges]);
  const graphJson = useMemo(() => JSON.stringify(graph), [graph]);
  const dirty = !watchOnly && graphJson !== savedJson;
  const byNode = useMemo(() => problemsByNode(problems), [problems]);
  // Edges take the colour of the type they carry.
  const styledEdges = useMemo(
    () =>
      edges.map((e) => {
        const node = nodes.find((n) => n.id === e.source);
        const port = portsOf(catalog.get(node?.data.component ?? ""), node?.data.params ?? {}).outputs.find(
          (p) => p.name === e.sourceHandle,
        );
        const stroke = port ? typeColour(port.type) : undefined;
        return stroke && e.style?.stroke !== stroke ? { ...e, style: { ...e.style, stroke, strokeWidth: 2 } } : e;
      }),
    [edges, nodes, catalog],
  );

  // --- load catalog and credentials ---------------------------------------------------
  useEffect(() => {
    api
      .get<unknown>("components")
      .then((data) => setComponents(asList<Component>(data, "components")))
      .catch((err: Error) => setCatalogError(`Could not load components: ${err.message}`));
    if (!readOnly) {
      api
        .get<unknown>("credentials")
        .then((data) => setCredentials(asList<Credential>(data, "credentials")))
        .catch(() => setCredentials([]));
    }
  }, [api, readOnly]);

  // On the run page, follow the run from its first event.
  useEffect(() => {
    if (watchOnly && config.runId) run.watch(config.runId, initial.nodes.map((n) => n.id));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [watchOnly, config.runId]);

  // --- unsaved-changes guard ------------------------------------------------------------
  useEffect(() => {
    if (!dirty) return;
    const guard = (e: BeforeUnloadEvent) => {
      e.preventDefault();
      e.returnValue = "";
    };
    window.addEventListener("beforeunload", guard);
    return () => window.removeEventListener("beforeunload", guard);
  }, [dirty]);

  // --- validation while editing (debounced) ----------------------------------------------
  useEffect(() => {
    if (readOnly || components.length === 0) return;
    const timer = setTimeout(() => {
      api
        .post<unknown>("flows/validate", { graph })
        .then((data) => setProblems(asList<Problem>(data, "problems")))
        .catch(() => {
          /* validation is advisory here; save reports problems authoritatively */
        });
    }, 600);
    return () => clearTimeout(timer);
  }, [api, graphJson, readOnly, components.length]); // eslint-disable-line react-hooks/exhaustive-deps

  // --- history ------------------------------------------------------------------------
  const snapshotNow = useCallback((): Graph => toGraph(flow.getNodes(), flow.getEdges()), [flow]);
  const checkpoint = useCallback(() => {
    past.current.push(snapshotNow());
    if (past.current.length > 100) past.current.shift();
    future.current = [];
  }, [snapshotNow]);
  const restore = useCallback(
    (g: Graph) => {
      const f = toFlow(g);
      setNodes(f.nodes);
      setEdges(f.edges);
    },
    [setNodes, setEdges],
  );
  const undo = useCallback(() => {
    const prev = past.current.pop();
    if (!prev) return;
    future.current.push(snapshotNow());
    restore(prev);
  }, [restore, snapshotNow]);
  const redo = useCallback(() => {
    const next = future.current.pop();
    if (!next) return;
    past.current.push(snapshotNow());
    restore(next);
  }, [restore, snapshotNow]);

  // --- adding nodes ---------------------------------------------------------------------
  const addNode = useCallback(
    (key: string, position?: { x: number; y: number }) => {
      const component = catalog.get(key);
      if (!component || readOnly) return;
      checkpoint();
      const taken = new Set(flow.getNodes().map((n) => n.id));
      const id = newNodeId(key, taken);
      let pos = position;
      if (!pos) {
        const rect = wrapper.current?.getBoundingClientRect();
        pos = flow.screenToFlowPosition({
          x: (rect?.left ?? 0) + (rect?.width ?? 600) / 2 - 90 + taken.size * 12,
          y: (rect?.top ?? 0) + (rect?.height ?? 400) / 2 - 40 + taken.size * 12,
        });
      }
      const node: FlowNode = {
        id,
        type: "component",
        position: pos,
        data: { component: key, params: defaultParams(component.params ?? {}) },
        selected: true,
      };
      setNodes((ns) => [...ns.map((n) => ({ ...n, selected: false })), node]);
      selectedRef.current = id;
      setSelected(id);
      setTab("node");
    },
    [catalog, checkpoint, flow, readOnly, setNodes],
  );

  const onDrop = useCallback(
    (e: React.DragEvent) => {
      e.preventDefault();
      const key = e.dataTransfer.getData(DRAG_TYPE) || e.dataTransfer.getData("text/plain");
      if (!key) return;
      addNode(key, flow.screenToFlowPosition({ x: e.clientX - 20, y: e.clientY - 15 }));
    },
    [addNode, flow],
  );

  // --- connections ----------------------------------------------------------------------
  const portType = useCallback(
    (nodeId: string, port: string | null | undefined, side: "inputs" | "outputs") => {
      const node = flow.getNode(nodeId);
      const component = node ? catalog.get(node.data.component) : undefined;
      return portsOf(component, node?.data.params ?? {})[side].find((p) => p.name === port);
    },
    [catalog, flow],
  );

  const isValidConnection: IsValidConnection<Edge> = useCallback(
    (c) => {
      if (c.source === c.target) return false;
      const out = portType(c.source, c.sourceHandle, "outputs");
      const inp = portType(c.target, c.targetHandle, "inputs");
      if (!out || !inp || !typesCompatible(out.type, inp.type)) return false;
      if (inp.multi) return true;
      // A single-valued input takes one edge: a second one would be ambiguous.
      return !flow.getEdges().some((e) => e.target === c.target && e.targetHandle === c.targetHandle);
    },
    [flow, portType],
  );

  const onConnect = useCallback(
    (c: Connection) => {
      checkpoint();
      const id = edgeId({
        source: c.source,
        source_port: c.sourceHandle ?? "",
        target: c.target,
        target_port: c.targetHandle ?? "",
      });
      const type = portType(c.source, c.sourceHandle, "outputs")?.type ?? "any";
      setEdges((es) => addEdge({ ...c, id, style: { stroke: typeColour(type), strokeWidth: 2 } }, es));
    },
    [checkpoint, portType, setEdges],
  );

  // --- params ---------------------------------------------------------------------------
  const setParams = useCallback(
    (nodeId: string, params: Record<string, unknown>) => {
      const now = Date.now();
      const last = lastParamCheckpoint.current;
      if (!last || last.node !== nodeId || now - last.at > 1500) checkpoint();
      lastParamCheckpoint.current = { node: nodeId, at: now };
      setNodes((ns) => ns.map((n) => (n.id === nodeId ? { ...n, data: { ...n.data, params } } : n)));
    },
    [checkpoint, setNodes],
  );

  // --- copy / paste / keys ------------------------------------------------------------
  const copy = useCallback(() => {
    const chosen = flow.getNodes().filter((n) => n.selected);
    if (!chosen.length) return;
    const ids = new Set(chosen.map((n) => n.id));
    const g = toGraph(chosen, flow.getEdges().filter((e) => ids.has(e.source) && ids.has(e.target)));
    clipboard.current = g;
  }, [flow]);

  const paste = useCallback(() => {
    const g = clipboard.current;
    if (!g || readOnly) return;
    checkpoint();
    const taken = new Set(flow.getNodes().map((n) => n.id));
    const rename = new Map<string, string>();
    for (const n of g.nodes) {
      const id = newNodeId(n.component, taken);
      taken.add(id);
      rename.set(n.id, id);
    }
    const pasted = toFlow({
      nodes: g.nodes.map((n) => ({
        ...n,
        id: rename.get(n.id)!,
        params: structuredClone(n.params),
        position: { x: n.position.x + 40, y: n.position.y + 40 },
      })),
      edges: g.edges.map((e) => ({ ...e, source: rename.get(e.source)!, target: rename.get(e.target)! })),
    });
    setNodes((ns) => [...ns.map((n) => ({ ...n, selected: false })), ...pasted.nodes.map((n) => ({ ...n, selected: true }))]);
    setEdges((es) => [...es, ...pasted.edges]);
    clipboard.current = { nodes: g.nodes.map((n) => ({ ...n, position: { x: n.position.x + 40, y: n.position.y + 40 } })), edges: g.edges };
  }, [checkpoint, flow, readOnly, setEdges, setNodes]);

  const onKeyDown = useCallback(
    (e: KeyboardEvent) => {
      if (isTyping(e.target)) return;
      const mod = e.ctrlKey || e.metaKey;
      if (!mod) return;
      const k = e.key.toLowerCase();
      if (k === "c") copy();
      else if (k === "v") paste();
      else if (k === "z" && !e.shiftKey && !readOnly) undo();
      else if (((k === "z" && e.shiftKey) || k === "y") && !readOnly) redo();
      else return;
      e.preventDefault();
    },
    [copy, paste, readOnly, redo, undo],
  );

  // Shortcuts work wherever focus is on the page, except while typing in a field.
  useEffect(() => {
    window.addEventListener("keydown", onKeyDown);
    return () => window.removeEventListener("keydown", onKeyDown);
  }, [onKeyDown]);

  // --- save / load versions ------------------------------------------------------------
  const save = useCallback(async () => {
    if (!config.flowId) return;
    setSaveState({ kind: "busy", text: "Saving…" });
    try {
      const saved = await api.post<Record<string, unknown>>(`flows/${config.flowId}/versions`, { graph, note });
      const number = Number(saved.number ?? saved.version ?? NaN);
      setSavedJson(graphJson);
      setProblems([]);
      setNote("");
      if (!Number.isNaN(number)) {
        setVersion(number);
        setVersions((vs) => [
          {
            number,
            note: String(saved.note ?? note),
            created_at: String(saved.created_at ?? new Date().toISOString()),
            created_by: (saved.created_by as string) ?? null,
            is_draft: Boolean(saved.is_draft ?? saved.draft ?? false),
          },
          ...vs.filter((v) => v.number !== number),
        ]);
      }
      setSaveState({ kind: "ok", text: Number.isNaN(number) ? "Saved." : `Saved as version ${number}.` });
    } catch (err) {
      if (err instanceof ApiError && err.body && typeof err.body === "object") {
        const list = asList<Problem>(err.body, "problems");
        const detail = (err.body as { detail?: unknown }).detail;
        setProblems(list.length ? list : asList<Problem>(detail, "problems"));
      }
      setSaveState({ kind: "error", text: `Not saved: ${(err as Error).message}` });
    }
  }, [api, config.flowId, graph, graphJson, note]);

  const loadVersion = useCallback(
    async (number: number) => {
      if (!config.flowId) return;
      if (dirty && !window.confirm("Discard unsaved changes and load this version?")) return;
      const data = await api.get<Record<string, unknown>>(`flows/${config.flowId}/versions/${number}`);
      const g = (data.graph ?? data) as Graph;
      checkpoint();
      restore(g);
      setSavedJson(JSON.stringify(toGraph(toFlow(g).nodes, toFlow(g).edges)));
      setVersion(number);
      setProblems([]);
    },
    [api, checkpoint, config.flowId, dirty, restore],
  );

  const fetchVersionDiff = useCallback(
    (a: number, b: number) => api.get<VersionDiff>(`flows/${config.flowId}/diff?a=${a}&b=${b}`),
    [api, config.flowId],
  );

  // --- run ------------------------------------------------------------------------------
  const startRun = useCallback(
    (inputs: Record<string, string>) => {
      const ids = graph.nodes.map((n) => n.id);
      setTab("run");
      // A saved flow runs by reference; an unsaved draft is sent whole (it becomes a draft version).
      if (!dirty && version !== null && config.flowId) {
        void run.start({ flow: config.flowId, version, inputs }, ids);
      } else {
        void run.start({ flow: config.flowId ?? undefined, graph, inputs }, ids).then((runId) => {
          // The draft that ran is now a (draft) version: show it in the history.
          if (!runId || !config.flowId) return;
          api
            .get<VersionInfo[]>(`flows/${config.flowId}/versions`)
            .then((list) => Array.isArray(list) && setVersions(list))
            .catch(() => undefined);
        });
      }
    },
    [api, config.flowId, dirty, graph, run, version],
  );

  useEffect(() => {
    const list = (run.rejection?.problems ?? []) as Problem[];
    if (list.length) setProblems(list);
  }, [run.rejection]);

  const selectedNode = selected ? nodes.find((n) => n.id === selected) : undefined;
  const selectedComponent = selectedNode ? catalog.get(selectedNode.data.component) : undefined;
  const general = byNode[""] ?? [];

  return (
    <CatalogContext.Provider value={catalog}>
      <ProblemsContext.Provider value={byNode}>
        <RunViewContext.Provider value={run.snapshot}>
          <div className={`island${watchOnly ? " watch" : ""}`} data-testid="island" data-dirty={dirty ? "true" : "false"}>
            {!watchOnly && (
              <div className="toolbar" role="toolbar" aria-label="Flow">
                <strong className="flow-name">{config.flowName}</strong>
                <span className="badge" data-testid="version">
                  {version !== null ? `v${version}` : "no version yet"}
                </span>
                {dirty && <span className="badge warn" data-testid="unsaved">unsaved changes</span>}
                {readOnly && <span className="badge" data-testid="read-only">read-only</span>}
                <div className="spacer" />
                {!readOnly && (
                  <>
                    <button type="button" className="secondary" onClick={undo} title="Undo (Ctrl+Z)" data-testid="undo">
                      Undo
                    </button>
                    <button type="button" className="secondary" onClick={redo} title="Redo (Ctrl+Shift+Z)" data-testid="redo">
                      Redo
                    </button>
                    <label className="inline-label" htmlFor="version-note">
                      Note
                    </label>
                    <input
                      id="version-note"
                      data-testid="version-note"
                      placeholder="What changed?"
                      value={note}
                      onChange={(e) => setNote(e.target.value)}
                    />
                    <button type="button" onClick={save} disabled={saveState?.kind === "busy"} data-testid="save">
                      Save version
                    </button>
                  </>
                )}
                <ConnectionBadge state={run.connection} attempt={run.attempt} />
                {saveState && (
                  <span className={saveState.kind === "error" ? "error" : "muted"} role="status" data-testid="save-state">
                    {saveState.text}
                  </span>
                )}
              </div>
            )}
            <div className="workspace-grid">
              {!watchOnly && (
                <Palette components={components} disabled={readOnly} onAdd={(key) => addNode(key)} />
              )}
              <div
                className="canvas"
                ref={wrapper}
                onDragOver={(e) => {
                  e.preventDefault();
                  e.dataTransfer.dropEffect = readOnly ? "none" : "move";
                }}
                onDrop={readOnly ? undefined : onDrop}
                data-testid="canvas"
              >
                {catalogError && <div className="canvas-msg error" role="alert">{catalogError}</div>}
                {general.length > 0 && (
                  <ul className="canvas-msg problems" role="alert" data-testid="graph-problems">
                    {general.map((p, i) => (
                      <li key={i}>{p}</li>
                    ))}
                  </ul>
                )}
                <ReactFlow<FlowNode, Edge>
                  nodes={nodes}
                  edges={styledEdges}
                  nodeTypes={nodeTypes}
                  onNodesChange={onNodesChange}
                  onEdgesChange={onEdgesChange}
                  onConnect={onConnect}
                  isValidConnection={isValidConnection}
                  onBeforeDelete={async () => {
                    if (readOnly) return false;
                    checkpoint();
                    return true;
                  }}
                  onNodeDragStart={() => checkpoint()}
                  onSelectionChange={({ nodes: sel }) => {
                    const id = sel.length === 1 ? sel[0].id : null;
                    // Called again whenever the node objects change: switch tabs only on a new selection.
                    if (id === selectedRef.current) return;
                    selectedRef.current = id;
                    setSelected(id);
                    if (id && !watchOnly) setTab("node");
                  }}
                  nodesDraggable={!readOnly}
                  nodesConnectable={!readOnly}
                  edgesFocusable={!readOnly}
                  deleteKeyCode={readOnly ? null : ["Backspace", "Delete"]}
                  // Fitting an empty canvas would re-centre on the first dropped node.
                  fitView={initial.nodes.length > 0}
                  fitViewOptions={{ maxZoom: 1, padding: 0.2 }}
                  proOptions={{ hideAttribution: true }}
                  defaultEdgeOptions={{ style: { strokeWidth: 2 } }}
                >
                  <Background gap={16} />
                  <MiniMap pannable zoomable ariaLabel="Mini map" />
                  <Controls showInteractive={!readOnly} />
                </ReactFlow>
              </div>
              <aside className="dock" aria-label="Details">
                {!watchOnly && (
                  <div className="tabs" role="tablist">
                    {(["node", "run", "versions"] as Tab[]).map((t) => (
                      <button
                        key={t}
                        type="button"
                        role="tab"
                        aria-selected={tab === t}
                        className={tab === t ? "tab active" : "tab"}
                        data-testid={`tab-${t}`}
                        onClick={() => setTab(t)}
                      >
                        {t === "node" ? "Node" : t === "run" ? "Run" : "Versions"}
                      </button>
                    ))}
                  </div>
                )}
                <div className="dock-body" role="tabpanel">
                  {tab === "node" &&
                    (selectedNode && selectedComponent ? (
                      <ParamPanel
                        key={selectedNode.id}
                        nodeId={selectedNode.id}
                        component={selectedComponent}
                        params={selectedNode.data.params}
                        readOnly={readOnly}
                        credentials={credentials}
                        problems={byNode[selectedNode.id] ?? []}
                        onChange={(p) => setParams(selectedNode.id, p)}
                      />
                    ) : (
                      <p className="muted">
                        Select a node to see its parameters.
                        {!readOnly && " Drag components from the left onto the canvas and connect an output to an input of the same type."}
                      </p>
                    ))}
                  {/* The run panel stays mounted so its inputs survive tab switches. */}
                  <div hidden={tab !== "run"}>
                    <RunPanel
                      run={run}
                      nodes={graph.nodes}
                      catalog={catalog}
                      canRun={config.canRun}
                      onRun={startRun}
                      runLink={config.runUrlTemplate}
                      watchOnly={watchOnly}
                      watchedRunId={config.runId}
                    />
                  </div>
                  {tab === "versions" && config.flowId && (
                    <VersionsPanel
                      versions={versions}
                      current={version}
                      onLoad={loadVersion}
                      fetchDiff={fetchVersionDiff}
                      catalog={catalog}
                    />
                  )}
                </div>
              </aside>
            </div>
          </div>
        </RunViewContext.Provider>
      </ProblemsContext.Provider>
    </CatalogContext.Provider>
  );
}
