import {
  Background,
  Controls,
  MiniMap,
  Panel,
  ReactFlow,
  ReactFlowProvider,
  addEdge,
  useEdgesState,
  useNodesInitialized,
  useNodesState,
  useReactFlow,
  type Connection,
  type Edge,
  type FinalConnectionState,
  type IsValidConnection,
  type OnConnectEnd,
} from "@xyflow/react";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Api, ApiError } from "../lib/api";
import type { IslandConfig } from "../lib/config";
import { connectionProblem } from "../lib/connect";
import {
  defaultParams,
  edgeId,
  graphKey,
  isComponent,
  newNodeId,
  portsOf,
  ERROR_PORT,
  type NodePolicy,
  type Pin,
  toFlow,
  toGraph,
  typeColour,
  type AnnotationColor,
  type CanvasNode,
  type Component,
  type FlowNode,
  type Graph,
  type GroupNode,
  type NoteNode,
} from "../lib/graph";
import { autoLayout, frameAround, membersOf } from "../lib/layout";
import { useColorMode } from "../lib/theme";
import { ConnectionBadge } from "../run/ConnectionBadge";
import { RunPanel } from "../run/RunPanel";
import { Playground } from "../chat/Playground";
import { useRun } from "../run/useRun";
import { AnnotationContext, GroupFrame, NoteCard, type AnnotationEditing } from "./AnnotationNodes";
import { ConnectDialog } from "./ConnectDialog";
import { CatalogContext, ProblemsContext, RunViewContext } from "./contexts";
import { ImportReportDialog, exportFlowFile, type ImportReport } from "./FlowFile";
import { NodeCard } from "./NodeCard";
import { DRAG_TYPE, Palette } from "./Palette";
import { ParamPanel, type Credential, type KnowledgeBaseOption } from "./ParamPanel";
import { AnnotationPanel, ProblemsPanel } from "./SidePanels";
import { useDraft } from "./useDraft";
import { VersionsPanel, type VersionDiff, type VersionInfo } from "./VersionsPanel";
import { problemsByNode, type Problem } from "./problems";

const nodeTypes = { component: NodeCard, note: NoteCard, frame: GroupFrame };
const ERROR_EDGE_COLOUR = "#c0392b";

/** Below this zoom, text on the canvas gets too small to read (the node title is 15 px,
 * port labels 13 px: at 0.75 they are 11 and 10 px). Fitting a large flow stops here and
 * shows its start (the inputs) instead of shrinking it further; the map shows the rest. */
export const MIN_READABLE_ZOOM = 0.75;

type Tab = "node" | "run" | "versions" | "chat";
type Panels = { palette: boolean; dock: boolean; minimap: boolean };
const PANELS_KEY = "flowdeck:panels";

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

function loadPanels(): Panels {
  try {
    const saved = JSON.parse(localStorage.getItem(PANELS_KEY) ?? "null") as Partial<Panels> | null;
    if (saved) return { palette: saved.palette !== false, dock: saved.dock !== false, minimap: saved.minimap !== false };
  } catch {
    /* defaults */
  }
  return { palette: true, dock: true, minimap: true };
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
  const colorMode = useColorMode();
  const [versionGraph, setVersionGraph] = useState<Graph>(() => config.graph ?? { nodes: [], edges: [] });
  // The canvas opens on the working draft when there is a newer one than the version.
  const openedDraft = !readOnly && config.draft?.graph ? config.draft : null;
  const initialGraph = useMemo(
    () => (openedDraft ? (openedDraft.graph as Graph) : (config.graph ?? { nodes: [], edges: [] })),
    [], // eslint-disable-line react-hooks/exhaustive-deps
  );
  const initial = useMemo(() => toFlow(initialGraph), [initialGraph]);
  const [nodes, setNodes, onNodesChange] = useNodesState<CanvasNode>(initial.nodes);
  const [edges, setEdges, onEdgesChange] = useEdgesState<Edge>(initial.edges);
  const [components, setComponents] = useState<Component[]>([]);
  const [catalogError, setCatalogError] = useState<string | null>(null);
  const [credentials, setCredentials] = useState<Credential[]>([]);
  const [knowledgeBases, setKnowledgeBases] = useState<KnowledgeBaseOption[]>([]);
  const [problems, setProblems] = useState<Problem[]>([]);
  const [tab, setTab] = useState<Tab>(watchOnly ? "run" : "node");
  const [chatConversation, setChatConversation] = useState<string | null>(null);
  const chatOpened = useRef(false);
  if (tab === "chat") chatOpened.current = true;
  const [selected, setSelected] = useState<string | null>(null);
  const selectedRef = useRef<string | null>(null);
  const [version, setVersion] = useState<number | null>(config.version);
  const [versions, setVersions] = useState<VersionInfo[]>(config.versions ?? []);
  const [note, setNote] = useState("");
  const [saveState, setSaveState] = useState<{ kind: "ok" | "error" | "busy"; text: string } | null>(
    openedDraft
      ? {
          kind: "ok",
          text: `Restored your draft of ${new Date(openedDraft.updatedAt).toLocaleString()}${openedDraft.updatedBy ? ` (${openedDraft.updatedBy})` : ""}.`,
        }
      : null,
  );
  const [toast, setToast] = useState<string | null>(null);
  const [connecting, setConnecting] = useState<string | null>(null);
  const [importReport, setImportReport] = useState<ImportReport | null>(null);
  const [panels, setPanels] = useState<Panels>(loadPanels);
  const past = useRef<Graph[]>([]);
  const future = useRef<Graph[]>([]);
  const clipboard = useRef<Graph | null>(null);
  const lastEditCheckpoint = useRef<{ node: string; at: number } | null>(null);
  const groupDrag = useRef<{ id: string; start: { x: number; y: number }; members: Map<string, { x: number; y: number }> } | null>(null);
  const wrapper = useRef<HTMLDivElement>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const flow = useReactFlow<CanvasNode, Edge>();
  const run = useRun(config.wsPath);
  const nodesReady = useNodesInitialized();

  const catalog = useMemo(() => new Map(components.map((c) => [c.key, c])), [components]);
  const graph = useMemo(() => toGraph(nodes, edges), [nodes, edges]);
  const graphJson = useMemo(() => JSON.stringify(graph), [graph]);
  const versionJson = useMemo(() => graphKey(versionGraph), [versionGraph]);
  const dirty = !watchOnly && graphJson !== versionJson;
  const byNode = useMemo(() => problemsByNode(problems), [problems]);

  useEffect(() => {
    try {
      localStorage.setItem(PANELS_KEY, JSON.stringify(panels));
    } catch {
      /* not remembered */
    }
  }, [panels]);

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

  // --- the working draft --------------------------------------------------------------
  const draft = useDraft({
    api,
    flowId: config.flowId,
    slug: config.slug,
    enabled: !readOnly,
    graph,
    graphJson,
    baseVersion: version,
    initialRevision: config.draftRevision ?? 0,
    initialJson: graphKey(initialGraph),
    versionJson,
    onReplace: useCallback(
      (g: Graph | null) => {
        checkpoint();
        restore(g ?? versionGraph);
      },
      [checkpoint, restore, versionGraph],
    ),
  });

  // Leaving before the server has the draft: ask (the unload save may still not arrive).
  useEffect(() => {
    if (!draft.unconfirmed) return;
    const guard = (e: BeforeUnloadEvent) => {
      e.preventDefault();
      e.returnValue = "";
    };
    window.addEventListener("beforeunload", guard);
    return () => window.removeEventListener("beforeunload", guard);
  }, [draft.unconfirmed]);

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
      api
        .get<unknown>("knowledge-bases")
        .then((data) => setKnowledgeBases(asList<KnowledgeBaseOption>(data, "knowledge bases")))
        .catch(() => setKnowledgeBases([]));
    }
  }, [api, readOnly]);

  // On the run page, follow the run from its first event.
  useEffect(() => {
    if (watchOnly && config.runId) run.watch(config.runId, graph.nodes.map((n) => n.id));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [watchOnly, config.runId]);

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

  // --- a readable fit ------------------------------------------------------------------
  const fitReadable = useCallback(() => {
    const all = flow.getNodes();
    const rect = wrapper.current?.getBoundingClientRect();
    if (!all.length || !rect || rect.width === 0) return;
    const bounds = flow.getNodesBounds(all);
    const pad = 28;
    const fit = Math.min((rect.width - 2 * pad) / bounds.width, (rect.height - 2 * pad) / bounds.height);
    const zoom = Math.max(MIN_READABLE_ZOOM, Math.min(1, fit));
    const width = bounds.width * zoom;
    const height = bounds.height * zoom;
    // Too large to fit at a readable size: show where the flow starts (left, top).
    const x = width <= rect.width - 2 * pad ? (rect.width - width) / 2 - bounds.x * zoom : pad - bounds.x * zoom;
    const y = height <= rect.height - 2 * pad ? (rect.height - height) / 2 - bounds.y * zoom : pad - bounds.y * zoom;
    void flow.setViewport({ x, y, zoom });
  }, [flow]);

  // Fit once, when a flow opens with nodes; an empty canvas that gets its first node keeps
  // its place (fitting then would move everything under the user's next drop).
  const fitted = useRef(initial.nodes.length === 0);
  useEffect(() => {
    if (nodesReady && !fitted.current && nodes.length) {
      fitted.current = true;
      fitReadable();
    }
  }, [nodesReady, nodes.length, fitReadable]);

  // --- adding nodes ---------------------------------------------------------------------
  const centre = useCallback(
    (offset = 0) => {
      const rect = wrapper.current?.getBoundingClientRect();
      return flow.screenToFlowPosition({
        x: (rect?.left ?? 0) + (rect?.width ?? 600) / 2 - 110 + offset,
        y: (rect?.top ?? 0) + (rect?.height ?? 400) / 2 - 50 + offset,
      });
    },
    [flow],
  );

  const select = useCallback(
    (id: string | null) => {
      setNodes((ns) => ns.map((n) => (n.selected === (n.id === id) ? n : { ...n, selected: n.id === id })));
      selectedRef.current = id;
      setSelected(id);
      if (id && !watchOnly) setTab("node");
    },
    [setNodes, watchOnly],
  );

  const addNode = useCallback(
    (key: string, position?: { x: number; y: number }) => {
      const component = catalog.get(key);
      if (!component || readOnly) return;
      checkpoint();
      const taken = new Set(flow.getNodes().map((n) => n.id));
      const id = newNodeId(key, taken);
      const node: FlowNode = {
        id,
        type: "component",
        position: position ?? centre(taken.size * 14),
        data: { component: key, params: defaultParams(component.params ?? {}) },
        selected: true,
      };
      setNodes((ns) => [...ns.map((n) => (n.selected ? { ...n, selected: false } : n)), node]);
      selectedRef.current = id;
      setSelected(id);
      setTab("node");
    },
    [catalog, centre, checkpoint, flow, readOnly, setNodes],
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

  const addNote = useCallback(() => {
    if (readOnly) return;
    checkpoint();
    const taken = new Set(flow.getNodes().map((n) => n.id));
    const id = newNodeId("note", taken);
    // Top left of what is in view: usually free, and never on the node being worked on.
    const rect = wrapper.current?.getBoundingClientRect();
    const position = flow.screenToFlowPosition({ x: (rect?.left ?? 0) + 60, y: (rect?.top ?? 0) + 50 });
    const note: NoteNode = { id, type: "note", position, width: 220, height: 120, data: { text: "", color: "yellow" }, selected: true };
    setNodes((ns) => [...ns.map((n) => (n.selected ? { ...n, selected: false } : n)), note]);
    selectedRef.current = id;
    setSelected(id);
  }, [checkpoint, flow, readOnly, setNodes]);

  const addGroup = useCallback(() => {
    if (readOnly) return;
    checkpoint();
    const all = flow.getNodes();
    const chosen = all.filter((n) => n.selected && n.type === "component");
    const taken = new Set(all.map((n) => n.id));
    const id = newNodeId("group", taken);
    const frame = chosen.length
      ? frameAround(chosen)
      : { position: centre(-60), width: 360, height: 240 };
    const group: GroupNode = { id, type: "frame", zIndex: -1, ...frame, data: { title: "Group", color: "blue" } };
    setNodes((ns) => [group, ...ns]);
  }, [centre, checkpoint, flow, readOnly, setNodes]);

  const updateAnnotation = useCallback(
    (id: string, data: Record<string, unknown>) => {
      const now = Date.now();
      const last = lastEditCheckpoint.current;
      if (!last || last.node !== id || now - last.at > 1500) checkpoint();
      lastEditCheckpoint.current = { node: id, at: now };
      setNodes((ns) => ns.map((n) => (n.id === id ? ({ ...n, data: { ...n.data, ...data } } as CanvasNode) : n)));
    },
    [checkpoint, setNodes],
  );
  const annotationEditing = useMemo<AnnotationEditing>(
    () => ({ readOnly, update: updateAnnotation }),
    [readOnly, updateAnnotation],
  );

  const tidyUp = useCallback(() => {
    if (readOnly) return;
    checkpoint();
    setNodes(autoLayout(flow.getNodes(), flow.getEdges()));
    requestAnimationFrame(() => requestAnimationFrame(fitReadable));
  }, [checkpoint, fitReadable, flow, readOnly, setNodes]);

  // --- connections ----------------------------------------------------------------------
  const explain = useCallback(
    (c: { source: string; sourceHandle?: string | null; target: string; targetHandle?: string | null }) =>
      connectionProblem(
        { node: c.source, port: c.sourceHandle, side: "source" },
        { node: c.target, port: c.targetHandle, side: "target" },
        flow.getNodes(),
        flow.getEdges(),
        catalog,
      ),
    [catalog, flow],
  );

  const isValidConnection: IsValidConnection<Edge> = useCallback((c) => explain(c) === null, [explain]);

  const connect = useCallback(
    (c: Connection) => {
      checkpoint();
      const id = edgeId({
        source: c.source,
        source_port: c.sourceHandle ?? "",
        target: c.target,
        target_port: c.targetHandle ?? "",
      });
      const node = flow.getNode(c.source);
      const port = isComponent(node)
        ? portsOf(catalog.get(node.data.component), node.data.params, node.data.policy).outputs.find((p) => p.name === c.sourceHandle)
        : undefined;
      setEdges((es) => addEdge({ ...c, id, style: { stroke: typeColour(port?.type ?? "any"), strokeWidth: 2 } }, es));
    },
    [catalog, checkpoint, flow, setEdges],
  );

  // A drag that ends on a port it cannot connect to says why (not just a red line).
  const onConnectEnd: OnConnectEnd = useCallback(
    (_event, state: FinalConnectionState) => {
      if (state.isValid !== false || !state.toHandle || !state.fromHandle) return;
      const from = { node: state.fromHandle.nodeId, port: state.fromHandle.id, side: state.fromHandle.type };
      const to = { node: state.toHandle.nodeId, port: state.toHandle.id, side: state.toHandle.type };
      const reason = connectionProblem(from, to, flow.getNodes(), flow.getEdges(), catalog);
      if (reason) setToast(reason);
    },
    [catalog, flow],
  );

  useEffect(() => {
    if (!toast) return;
    const timer = setTimeout(() => setToast(null), 6000);
    return () => clearTimeout(timer);
  }, [toast]);

  // Edges take the colour of the type they carry; a wire from an error port is red and
  // dashed, the path taken only when its node fails.
  const styledEdges = useMemo(
    () =>
      edges.map((e) => {
        const node = nodes.find((n) => n.id === e.source);
        const port = isComponent(node)
          ? portsOf(catalog.get(node.data.component), node.data.params, node.data.policy).outputs.find((p) => p.name === e.sourceHandle)
          : undefined;
        const failure = isComponent(node) && node.data.policy?.on_failure === "error_port" && port?.name === ERROR_PORT.name;
        const stroke = failure ? ERROR_EDGE_COLOUR : port ? typeColour(port.type) : undefined;
        if (!stroke || e.style?.stroke === stroke) return e;
        return { ...e, style: { ...e.style, stroke, strokeWidth: 2, ...(failure ? { strokeDasharray: "6 4" } : {}) } };
      }),
    [edges, nodes, catalog],
  );

  // --- params ---------------------------------------------------------------------------
  const setParams = useCallback(
    (nodeId: string, params: Record<string, unknown>) => {
      const now = Date.now();
      const last = lastEditCheckpoint.current;
      if (!last || last.node !== nodeId || now - last.at > 1500) checkpoint();
      lastEditCheckpoint.current = { node: nodeId, at: now };
      setNodes((ns) =>
        ns.map((n) => (n.id === nodeId && n.type === "component" ? { ...n, data: { ...n.data, params } } : n)),
      );
    },
    [checkpoint, setNodes],
  );

  /** Set a node's policy; wires from its error port go when the policy no longer has one. */
  const setPolicy = useCallback(
    (nodeId: string, policy: NodePolicy | undefined) => {
      const now = Date.now();
      const last = lastEditCheckpoint.current;
      if (!last || last.node !== nodeId || now - last.at > 1500) checkpoint();
      lastEditCheckpoint.current = { node: nodeId, at: now };
      setNodes((ns) =>
        ns.map((n) => {
          if (n.id !== nodeId || n.type !== "component") return n;
          const data = { ...n.data };
          if (policy) data.policy = policy;
          else delete data.policy;
          return { ...n, data };
        }),
      );
      if (policy?.on_failure !== "error_port") {
        setEdges((es) => es.filter((e) => !(e.source === nodeId && e.sourceHandle === ERROR_PORT.name)));
      }
    },
    [checkpoint, setEdges, setNodes],
  );

  /** Pin a node to the output a run recorded for it, or unpin it (undefined). */
  const setPin = useCallback(
    (nodeId: string, pinned: Pin | undefined) => {
      checkpoint();
      setNodes((ns) =>
        ns.map((n) => {
          if (n.id !== nodeId || n.type !== "component") return n;
          const data = { ...n.data };
          if (pinned) data.pinned = pinned;
          else delete data.pinned;
          return { ...n, data };
        }),
      );
    },
    [checkpoint, setNodes],
  );

  // --- copy / paste / keys ------------------------------------------------------------
  const copy = useCallback(() => {
    const chosen = flow.getNodes().filter((n) => n.selected);
    if (!chosen.length) return;
    const ids = new Set(chosen.map((n) => n.id));
    clipboard.current = toGraph(chosen, flow.getEdges().filter((e) => ids.has(e.source) && ids.has(e.target)));
  }, [flow]);

  const paste = useCallback(() => {
    const g = clipboard.current;
    if (!g || readOnly) return;
    checkpoint();
    const taken = new Set(flow.getNodes().map((n) => n.id));
    const rename = new Map<string, string>();
    for (const item of [...g.nodes.map((n) => ({ id: n.id, stem: n.component })), ...(g.annotations ?? []).map((a) => ({ id: a.id, stem: a.kind }))]) {
      const id = newNodeId(item.stem, taken);
      taken.add(id);
      rename.set(item.id, id);
    }
    const shift = (p: { x: number; y: number }) => ({ x: p.x + 40, y: p.y + 40 });
    const pasted = toFlow({
      nodes: g.nodes.map((n) => ({ ...n, id: rename.get(n.id)!, params: structuredClone(n.params), position: shift(n.position) })),
      edges: g.edges.map((e) => ({ ...e, source: rename.get(e.source)!, target: rename.get(e.target)! })),
      annotations: (g.annotations ?? []).map((a) => ({ ...a, id: rename.get(a.id)!, position: shift(a.position) })),
    });
    setNodes((ns) => [...ns.map((n) => (n.selected ? { ...n, selected: false } : n)), ...pasted.nodes.map((n) => ({ ...n, selected: true }))]);
    setEdges((es) => [...es, ...pasted.edges]);
    clipboard.current = {
      nodes: g.nodes.map((n) => ({ ...n, position: shift(n.position) })),
      edges: g.edges,
      annotations: (g.annotations ?? []).map((a) => ({ ...a, position: shift(a.position) })),
    };
  }, [checkpoint, flow, readOnly, setEdges, setNodes]);

  // --- save / load versions ------------------------------------------------------------
  const save = useCallback(async () => {
    if (!config.flowId || readOnly) return;
    setSaveState({ kind: "busy", text: "Saving…" });
    try {
      const saved = await api.post<Record<string, unknown>>(`flows/${config.flowId}/versions`, { graph, note });
      const number = Number(saved.number ?? NaN);
      setVersionGraph(graph);
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
            is_draft: Boolean(saved.is_draft ?? false),
          },
          ...vs.filter((v) => v.number !== number),
        ]);
      }
      setSaveState({
        kind: "ok",
        text: saved.unchanged ? `No changes since version ${number}: nothing new to save.` : `Saved as version ${number}.`,
      });
    } catch (err) {
      if (err instanceof ApiError && err.body && typeof err.body === "object") {
        const list = asList<Problem>(err.body, "problems");
        if (list.length) setProblems(list);
      }
      const count = err instanceof ApiError ? asList<Problem>(err.body, "problems").length : 0;
      setSaveState({
        kind: "error",
        text: count
          ? `Not saved as a version: ${count === 1 ? "1 problem" : `${count} problems`} to fix first (your draft is kept).`
          : `Not saved: ${(err as Error).message}`,
      });
    }
  }, [api, config.flowId, graph, note, readOnly]);

  const loadVersion = useCallback(
    async (number: number) => {
      if (!config.flowId) return;
      if (dirty && !window.confirm(`Put version ${number} on the canvas? Your draft will be replaced by it.`)) return;
      const data = await api.get<Record<string, unknown>>(`flows/${config.flowId}/versions/${number}`);
      const g = (data.graph ?? data) as Graph;
      checkpoint();
      restore(g);
      setVersionGraph(g);
      setVersion(number);
      setProblems([]);
      requestAnimationFrame(() => requestAnimationFrame(fitReadable));
    },
    [api, checkpoint, config.flowId, dirty, fitReadable, restore],
  );

  const fetchVersionDiff = useCallback(
    (a: number, b: number) => api.get<VersionDiff>(`flows/${config.flowId}/diff?a=${a}&b=${b}`),
    [api, config.flowId],
  );

  const discardDraft = useCallback(async () => {
    if (!window.confirm(version !== null ? `Discard the draft and go back to version ${version}?` : "Discard the draft and clear the canvas?")) return;
    try {
      await draft.discard();
      setSaveState({ kind: "ok", text: version !== null ? `Back to version ${version}.` : "Draft discarded." });
    } catch (err) {
      setSaveState({ kind: "error", text: `Not discarded: ${(err as Error).message}` });
    }
  }, [draft, version]);

  // --- files ---------------------------------------------------------------------------
  const importFile = useCallback(
    async (file: File) => {
      let document: unknown;
      try {
        document = JSON.parse(await file.text());
      } catch {
        setImportReport({ refused: [{ node_id: null, component: null, reason: "The file is not JSON: export a flow from Flowdeck and import that file." }], cleared: [], problems: [], notes: [] });
        return;
      }
      try {
        const report = await api.post<ImportReport>("flows/import/check", { document });
        checkpoint();
        restore(report.graph as Graph);
        setImportReport(report);
        requestAnimationFrame(() => requestAnimationFrame(fitReadable));
      } catch (err) {
        const body = err instanceof ApiError ? (err.body as { report?: ImportReport }) : undefined;
        setImportReport(
          body?.report ?? { refused: [{ node_id: null, component: null, reason: (err as Error).message }], cleared: [], problems: [], notes: [] },
        );
      }
    },
    [api, checkpoint, fitReadable, restore],
  );

  // --- keys ----------------------------------------------------------------------------
  const onKeyDown = useCallback(
    (e: KeyboardEvent) => {
      if (isTyping(e.target) || connecting || importReport) return;
      const mod = e.ctrlKey || e.metaKey;
      const k = e.key.toLowerCase();
      if (!mod) {
        if (k === "c" && !readOnly && selectedRef.current && isComponent(flow.getNode(selectedRef.current))) {
          e.preventDefault();
          setConnecting(selectedRef.current);
        }
        return;
      }
      if (k === "c") copy();
      else if (k === "v") paste();
      else if (k === "s" && !readOnly) void save();
      else if (k === "z" && !e.shiftKey && !readOnly) undo();
      else if (((k === "z" && e.shiftKey) || k === "y") && !readOnly) redo();
      else return;
      e.preventDefault();
    },
    [connecting, copy, flow, importReport, paste, readOnly, redo, save, undo],
  );

  // Shortcuts work wherever focus is on the page, except while typing in a field.
  useEffect(() => {
    window.addEventListener("keydown", onKeyDown);
    return () => window.removeEventListener("keydown", onKeyDown);
  }, [onKeyDown]);

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
  const selectedComponent = isComponent(selectedNode) ? catalog.get(selectedNode.data.component) : undefined;
  const general = byNode[""] ?? [];
  const problemCount = problems.length;
  const columns = watchOnly
    ? `minmax(0, 1fr) ${panels.dock ? "420px" : "40px"}`
    : `${panels.palette ? "200px" : "40px"} minmax(0, 1fr) ${panels.dock ? "340px" : "40px"}`;
  const draftLabel: Record<string, string> = {
    pending: "Draft changed",
    saving: "Saving draft…",
    saved: "Draft saved",
    offline: "Kept offline",
    error: "Draft not saved",
    conflict: "Draft conflict",
    clean: "",
  };

  return (
    <CatalogContext.Provider value={catalog}>
      <ProblemsContext.Provider value={byNode}>
        <RunViewContext.Provider value={run.snapshot}>
          <AnnotationContext.Provider value={annotationEditing}>
            <div
              className={`island${watchOnly ? " watch" : ""}`}
              data-testid="island"
              data-dirty={dirty ? "true" : "false"}
              data-draft={draft.state}
            >
              {!watchOnly && (
                <div className="toolbar" role="toolbar" aria-label="Flow">
                  <strong className="flow-name" title={config.flowName}>
                    {config.flowName}
                  </strong>
                  <span className="badge" data-testid="version">
                    {version !== null ? `v${version}` : "no version yet"}
                  </span>
                  {dirty && (
                    <span className="badge warn" data-testid="unsaved" title="The canvas differs from the saved version: it is kept as a draft.">
                      not a version
                    </span>
                  )}
                  {!readOnly && draft.state !== "clean" && (
                    <span
                      className={`draft-state ${draft.state}`}
                      data-testid="draft-state"
                      data-state={draft.state}
                      title={draft.message ?? "The canvas is saved as this flow's draft a moment after each change"}
                    >
                      {draftLabel[draft.state]}
                    </span>
                  )}
                  {readOnly && <span className="badge" data-testid="read-only">read-only</span>}
                  {!readOnly && problemCount > 0 && (
                    <button
                      type="button"
                      className="secondary small problems-count"
                      data-testid="problems-count"
                      onClick={() => {
                        select(null);
                        setTab("node");
                        setPanels((p) => ({ ...p, dock: true }));
                      }}
                    >
                      ⚠ {problemCount === 1 ? "1 problem" : `${problemCount} problems`}
                    </button>
                  )}
                  <div className="spacer" />
                  {!readOnly && (
                    <>
                      <span className="tool-group">
                        <button type="button" className="secondary small" onClick={undo} title="Undo (Ctrl+Z)" data-testid="undo">
                          Undo
                        </button>
                        <button type="button" className="secondary small" onClick={redo} title="Redo (Ctrl+Shift+Z)" data-testid="redo">
                          Redo
                        </button>
                      </span>
                      <span className="tool-group">
                        <button
                          type="button"
                          className="secondary small"
                          data-testid="export-file"
                          title="Download the canvas as a flow file"
                          onClick={() => exportFlowFile(config.flowName, config.flowDescription ?? "", graph)}
                        >
                          Export
                        </button>
                        <button type="button" className="secondary small" data-testid="import-open" title="Put a flow file on the canvas" onClick={() => fileInput.current?.click()}>
                          Import
                        </button>
                        <input
                          ref={fileInput}
                          type="file"
                          accept=".json,application/json"
                          hidden
                          data-testid="import-input"
                          onChange={(e) => {
                            const file = e.target.files?.[0];
                            e.target.value = "";
                            if (file) void importFile(file);
                          }}
                        />
                      </span>
                      {dirty && (
                        <button type="button" className="secondary small" onClick={discardDraft} data-testid="discard-draft" title="Throw the draft away and go back to the saved version">
                          Discard draft
                        </button>
                      )}
                      <label className="visually-hidden" htmlFor="version-note">
                        Note for the version
                      </label>
                      <input
                        id="version-note"
                        data-testid="version-note"
                        placeholder="What changed? (note)"
                        value={note}
                        maxLength={500}
                        onChange={(e) => setNote(e.target.value)}
                      />
                      <button type="button" onClick={save} disabled={saveState?.kind === "busy"} data-testid="save" title="Save the canvas as a new version (Ctrl+S)">
                        Save version
                      </button>
                    </>
                  )}
                  <ConnectionBadge state={run.connection} attempt={run.attempt} />
                  {(saveState || draft.restoredFromBrowser) && (
                    <span className={saveState?.kind === "error" ? "error save-state" : "muted save-state"} role="status" data-testid="save-state">
                      {draft.restoredFromBrowser
                        ? `Restored changes this browser kept from ${new Date(draft.restoredFromBrowser).toLocaleString()}.`
                        : saveState?.text}
                    </span>
                  )}
                </div>
              )}
              <div className="workspace-grid" style={{ gridTemplateColumns: columns }}>
                {!watchOnly &&
                  (panels.palette ? (
                    <div className="left-column">
                      <Palette
                        components={components}
                        disabled={readOnly}
                        onAdd={(key) => addNode(key)}
                        onCollapse={() => setPanels((p) => ({ ...p, palette: false }))}
                      />
                      <div className="map-panel">
                        <button
                          type="button"
                          className="secondary small"
                          data-testid="minimap-toggle"
                          aria-pressed={panels.minimap}
                          onClick={() => setPanels((p) => ({ ...p, minimap: !p.minimap }))}
                        >
                          {panels.minimap ? "Hide map" : "Show map"}
                        </button>
                        {panels.minimap && (
                          <MiniMap
                            pannable
                            zoomable
                            ariaLabel="Mini map"
                            className="side-minimap"
                            nodeColor={(n) => (n.type === "frame" ? "transparent" : n.type === "note" ? "#f5d36b" : "#8b93a5")}
                            nodeStrokeColor={(n) => (n.type === "frame" ? "#8b93a5" : "transparent")}
                          />
                        )}
                      </div>
                    </div>
                  ) : (
                    <div className="rail">
                      <button
                        type="button"
                        className="secondary small"
                        data-testid="palette-expand"
                        aria-label="Show the components"
                        title="Show the components"
                        onClick={() => setPanels((p) => ({ ...p, palette: true }))}
                      >
                        »
                      </button>
                    </div>
                  ))}
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
                  {nodes.length === 0 && !readOnly && (
                    <div className="canvas-empty" data-testid="canvas-empty">
                      <p>Drag a component here from the left, or press Enter on one.</p>
                      <p className="muted">
                        Or start from a template on the <a href={config.flowsUrl}>flows page</a>.
                      </p>
                    </div>
                  )}
                  {toast && (
                    <div className="toast" role="alert" data-testid="connect-error" onClick={() => setToast(null)}>
                      {toast}
                    </div>
                  )}
                  <ReactFlow<CanvasNode, Edge>
                    nodes={nodes}
                    edges={styledEdges}
                    nodeTypes={nodeTypes}
                    colorMode={colorMode}
                    onNodesChange={onNodesChange}
                    onEdgesChange={onEdgesChange}
                    onConnect={connect}
                    onConnectEnd={onConnectEnd}
                    isValidConnection={isValidConnection}
                    connectionRadius={26}
                    onBeforeDelete={async () => {
                      if (readOnly) return false;
                      checkpoint();
                      return true;
                    }}
                    onNodeDragStart={(_e, node) => {
                      checkpoint();
                      if (node.type === "frame") {
                        const all = flow.getNodes();
                        const members = new Map(
                          membersOf(node, all)
                            .filter((m) => !m.selected)
                            .map((m) => [m.id, { ...m.position }]),
                        );
                        groupDrag.current = { id: node.id, start: { ...node.position }, members };
                      }
                    }}
                    onNodeDrag={(_e, node) => {
                      const drag = groupDrag.current;
                      if (!drag || drag.id !== node.id) return;
                      const dx = node.position.x - drag.start.x;
                      const dy = node.position.y - drag.start.y;
                      setNodes((ns) =>
                        ns.map((n) => {
                          const start = drag.members.get(n.id);
                          return start ? { ...n, position: { x: start.x + dx, y: start.y + dy } } : n;
                        }),
                      );
                    }}
                    onNodeDragStop={() => {
                      groupDrag.current = null;
                    }}
                    onNodeClick={(_e, node) => {
                      // Clicking the node already selected brings its parameters back.
                      selectedRef.current = node.id;
                      setSelected(node.id);
                      if (!watchOnly) {
                        setTab("node");
                        setPanels((p) => (p.dock ? p : { ...p, dock: true }));
                      }
                    }}
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
                    minZoom={0.2}
                    maxZoom={1.75}
                    proOptions={{ hideAttribution: true }}
                    defaultEdgeOptions={{ style: { strokeWidth: 2 } }}
                  >
                    <Background gap={16} />
                    {!readOnly && (
                      <Panel position="bottom-right" className="canvas-tools">
                        <button type="button" className="secondary small" onClick={addNote} data-testid="add-note" title="Add a sticky note">
                          + Note
                        </button>
                        <button type="button" className="secondary small" onClick={addGroup} data-testid="add-group" title="Frame the selected nodes (Ctrl+click to select several) in a titled group">
                          + Group
                        </button>
                        <button type="button" className="secondary small" onClick={tidyUp} data-testid="tidy-up" title="Lay the flow out left to right (undo with Ctrl+Z)">
                          Tidy up
                        </button>
                      </Panel>
                    )}
                    <Controls showInteractive={!readOnly} showFitView={false} position="bottom-left">
                      <button
                        type="button"
                        className="react-flow__controls-button fit-readable"
                        onClick={fitReadable}
                        title="Fit the flow (at a readable size)"
                        aria-label="Fit the flow"
                        data-testid="fit-view"
                      >
                        ⤢
                      </button>
                    </Controls>
                  </ReactFlow>
                </div>
                {panels.dock ? (
                  <aside className="dock" aria-label="Details">
                    <div className="tabs" role="tablist">
                      {!watchOnly &&
                        ((config.flowId ? ["node", "run", "chat", "versions"] : ["node", "run", "versions"]) as Tab[]).map((t) => (
                          <button
                            key={t}
                            type="button"
                            role="tab"
                            aria-selected={tab === t}
                            className={tab === t ? "tab active" : "tab"}
                            data-testid={`tab-${t}`}
                            onClick={() => setTab(t)}
                          >
                            {{ node: "Node", run: "Run", chat: "Chat", versions: "Versions" }[t]}
                          </button>
                        ))}
                      {watchOnly && <span className="tab active">Run</span>}
                      <button
                        type="button"
                        className="tab collapse"
                        aria-label="Hide the side panel"
                        title="Hide the side panel"
                        data-testid="dock-collapse"
                        onClick={() => setPanels((p) => ({ ...p, dock: false }))}
                      >
                        »
                      </button>
                    </div>
                    <div className="dock-body" role="tabpanel">
                      {tab === "node" &&
                        (isComponent(selectedNode) && selectedComponent ? (
                          <ParamPanel
                            key={selectedNode.id}
                            api={api}
                            nodeId={selectedNode.id}
                            component={selectedComponent}
                            params={selectedNode.data.params}
                            readOnly={readOnly}
                            credentials={credentials}
                            credentialsUrl={config.credentialsUrl}
                            knowledgeBases={knowledgeBases}
                            knowledgeUrl={config.knowledgeUrl}
                            problems={byNode[selectedNode.id] ?? []}
                            onChange={(p) => setParams(selectedNode.id, p)}
                            onConnect={() => setConnecting(selectedNode.id)}
                            policy={selectedNode.data.policy}
                            onPolicyChange={(policy) => setPolicy(selectedNode.id, policy)}
                            pinned={selectedNode.data.pinned}
                            pinAvailable={run.snapshot.runId && run.snapshot.nodes[selectedNode.id]?.status === "done" ? run.snapshot.runId : null}
                            onPinChange={(pin) => setPin(selectedNode.id, pin)}
                          />
                        ) : selectedNode && selectedNode.type !== "component" ? (
                          <AnnotationPanel
                            node={selectedNode}
                            readOnly={readOnly}
                            onChange={(data) => updateAnnotation(selectedNode.id, data as { color?: AnnotationColor })}
                          />
                        ) : (
                          <ProblemsPanel problems={problems} readOnly={readOnly} nodes={nodes} onSelect={select} />
                        ))}
                      {/* The run panel stays mounted so its inputs survive tab switches. */}
                      <div hidden={tab !== "run"}>
                        <RunPanel
                          run={run}
                          nodes={graph.nodes}
                          edges={graph.edges}
                          catalog={catalog}
                          canRun={config.canRun}
                          onRun={startRun}
                          runLink={config.runUrlTemplate}
                          watchOnly={watchOnly}
                          watchedRunId={config.runId}
                        />
                      </div>
                      {/* Mounted once opened: the conversation and its socket survive tab switches. */}
                      {(tab === "chat" || chatOpened.current) && config.flowId && (
                        <div hidden={tab !== "chat"} className="dock-chat">
                          <p className="muted small-note">
                            Chats with the newest saved version{version ? ` (v${version})` : ""}.{" "}
                            {config.chatUrl && (
                              <a href={config.chatUrl} data-testid="chat-page-link">
                                Open the chat page
                              </a>
                            )}
                          </p>
                          <Playground
                            config={config}
                            inputIds={graph.nodes.filter((n) => n.component === "io.chat_input").map((n) => n.id)}
                            conversationId={chatConversation}
                            onConversation={setChatConversation}
                          />
                        </div>
                      )}
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
                ) : (
                  <div className="rail right">
                    <button
                      type="button"
                      className="secondary small"
                      data-testid="dock-expand"
                      aria-label="Show the side panel"
                      title="Show the side panel"
                      onClick={() => setPanels((p) => ({ ...p, dock: true }))}
                    >
                      «
                    </button>
                  </div>
                )}
              </div>
              {connecting && (
                <ConnectDialog
                  nodeId={connecting}
                  nodes={nodes}
                  edges={edges}
                  catalog={catalog}
                  onConnect={connect}
                  onClose={() => setConnecting(null)}
                />
              )}
              {importReport && <ImportReportDialog report={importReport} onClose={() => setImportReport(null)} />}
              {draft.conflict && (
                <div className="dialog-backdrop">
                  <div className="dialog" role="alertdialog" aria-modal="true" aria-label="The draft changed" data-testid="draft-conflict">
                    <h2>The draft changed</h2>
                    <p>{draft.conflict.detail}</p>
                    {draft.conflict.theirs.updated_by && (
                      <p className="muted">
                        Saved by {draft.conflict.theirs.updated_by}
                        {draft.conflict.theirs.updated_at ? ` at ${new Date(draft.conflict.theirs.updated_at).toLocaleString()}` : ""}.
                      </p>
                    )}
                    <div className="buttons">
                      <button type="button" className="secondary" onClick={draft.keepTheirs} data-testid="conflict-theirs">
                        {draft.conflict.source === "browser" ? "Use the saved draft" : "Load their draft"}
                      </button>
                      <button type="button" onClick={draft.keepMine} data-testid="conflict-mine">
                        {draft.conflict.source === "browser" ? "Keep this browser's changes" : "Keep mine (overwrite theirs)"}
                      </button>
                    </div>
                  </div>
                </div>
              )}
            </div>
          </AnnotationContext.Provider>
        </RunViewContext.Provider>
      </ProblemsContext.Provider>
    </CatalogContext.Provider>
  );
}
