// `npm run build:console` (and before `npm start`): builds the web console (src/console) into
// dist/console with Vite, unless the build there is newer than every source it is made of.
// `--force` builds regardless. The server serves that folder (src/platform/http/console.ts).
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { newestSource } from "./newest-source.mjs";

const root = join(import.meta.dirname, "..");
const out = join(root, "dist/console");
const stamp = join(out, "console.html");

// The pages bundle the SDK: any source under src/ (the console, the SDK, core) can change them.
const stale =
  process.argv.includes("--force") ||
  !existsSync(stamp) ||
  statSync(stamp).mtimeMs < Math.max(newestSource(join(root, "src"), /\.(ts|html|css)$/), statSync(join(root, "package-lock.json")).mtimeMs);
if (stale) {
  const { build } = await import("vite");
  const started = Date.now();
  await build({ configFile: join(root, "src/console/vite.config.ts") });
  console.error(`handsafe: built the web console into dist/console (${Date.now() - started} ms)`);
}
