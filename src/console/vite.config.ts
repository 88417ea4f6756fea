/**
 * The web console's build: two pages, /console (the operator's console) and /handset (a virtual
 * handset running the SDK), bundled by Vite with the "browser" export conditions, so the SDK's
 * `#crypto-backend` is the web backend and no node:* module is in the bundle. The server serves
 * the output folder (platform/http/console.ts); `npm run build:console` writes it.
 */
import { join } from "node:path";
import { defineConfig } from "vite";

const root = import.meta.dirname;

export const CONSOLE_OUT_DIR = join(root, "../../dist/console");

export default defineConfig({
  root,
  base: "/console/",
  logLevel: "warn",
  resolve: { conditions: ["browser", "module", "import", "default"] },
  build: {
    outDir: CONSOLE_OUT_DIR,
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    rollupOptions: {
      input: { console: join(root, "console.html"), handset: join(root, "handset.html") },
    },
  },
});
