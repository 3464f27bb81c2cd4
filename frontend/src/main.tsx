import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import "@xyflow/react/dist/style.css";
import "./styles.css";
import { readConfig } from "./lib/config";
import { EditorIsland } from "./editor/Editor";
import { ChatPage } from "./chat/ChatPage";

const root = document.getElementById("flowdeck-root");
if (root) {
  const config = readConfig();
  createRoot(root).render(
    <StrictMode>
      {config.mode === "chat" ? <ChatPage config={config} /> : <EditorIsland config={config} />}
    </StrictMode>,
  );
}
