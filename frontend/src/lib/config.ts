/** What the Django template hands the island (a json_script element). */
export type IslandConfig = {
  mode: "editor" | "run";
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
};

export function readConfig(id = "flowdeck-config"): IslandConfig {
  const el = document.getElementById(id);
  if (!el?.textContent) throw new Error(`#${id} is missing`);
  return JSON.parse(el.textContent) as IslandConfig;
}
