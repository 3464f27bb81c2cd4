import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// One island bundle with fixed names (static/build/editor.js + editor.css): the Django
// templates reference them through {% static %}, so there is no manifest to read.
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
      input: "src/main.tsx",
      output: {
        entryFileNames: "editor.js",
        chunkFileNames: "editor-[name].js",
        assetFileNames: (info) =>
          (info.names ?? []).some((n) => n.endsWith(".css")) ? "editor.css" : "assets/[name][extname]",
      },
    },
  },
});
