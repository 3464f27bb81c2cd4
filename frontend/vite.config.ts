import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Two entries with fixed names: the island (static/build/editor.js + editor.css) and the
// embedded chat (static/build/embed.js, no React: it loads on other people's websites).
// The Django templates reference them through {% static %}, so there is no manifest to read.
export default defineConfig({
  plugins: [react()],
  base: "/static/build/",
  publicDir: false,
  build: {
    outDir: "../static/build",
    emptyOutDir: true,
    cssCodeSplit: false,
    sourcemap: true,
    target: "es2022",
    rollupOptions: {
      input: { editor: "src/main.tsx", embed: "src/embed/main.ts" },
      output: {
        entryFileNames: "[name].js",
        chunkFileNames: "editor-[name].js",
        assetFileNames: (info) =>
          (info.names ?? []).some((n) => n.endsWith(".css")) ? "editor.css" : "assets/[name][extname]",
      },
    },
  },
});
