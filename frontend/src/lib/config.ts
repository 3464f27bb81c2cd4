/** What the Django template hands the island (a json_script element). */
export type IslandConfig = {
  mode: "editor" | "run" | "chat";
  slug: string;
  apiBase: string; // "/api/w/<slug>/"
  wsPath: string; // "/ws/w/<slug>/exec"
  flowId: number | null;
  flowName: string;
  version: number | null;
  runId: string | null;
  canEdit: boolean;
  canRun: boolean;
  runsUrl: string;
  flowsUrl: string;
  runUrlTemplate: string; // contains "RUN_ID"
  flowDescription?: string;
  /** The flow's working draft when it is newer than the version shown (editor only). */
  draft?: DraftConfig | null;
  /** The draft's revision the next autosave builds on (0: none). */
  draftRevision?: number;
  /** Where the workspace's provider credentials are managed. */
  credentialsUrl?: string;
  /** Where the workspace's knowledge bases are managed (the picker links there). */
  knowledgeUrl?: string;
  /** The chat page: the chat input nodes of the version it runs (the newest saved). */
  chatInputs?: string[];
  /** The flow's chat page (the editor's Chat tab links there). */
  chatUrl?: string;
};

export type DraftConfig = {
  graph: unknown;
  revision: number;
  baseVersion: number | null;
  updatedAt: string;
  updatedBy: string | null;
};

export function readConfig(id = "flowdeck-config"): IslandConfig {
  const el = document.getElementById(id);
  if (!el?.textContent) throw new Error(`#${id} is missing`);
  return JSON.parse(el.textContent) as IslandConfig;
}
