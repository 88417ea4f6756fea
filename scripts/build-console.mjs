// `npm run build:console` (and before `npm start`): builds the web console (src/console) into
// dist/console with Vite, unless the build there is newer than every source it is made of.
// `--force` builds regardless. The server serves that folder (src/platform/http/console.ts).
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");
const out = join(root, "dist/console");
const stamp = join(out, "console.html");

/** The newest modification time under `dir` (TypeScript, HTML and CSS files). */
function newest(dir) {
  let t = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) t = Math.max(t, newest(path));
    else if (/\.(ts|html|css)$/.test(entry.name)) t = Math.max(t, statSync(path).mtimeMs);
  }
  return t;
}

// The pages bundle the SDK: any source under src/ (the console, the SDK, core) can change them.
const stale =
  process.argv.includes("--force") ||
  !existsSync(stamp) ||
  statSync(stamp).mtimeMs < Math.max(newest(join(root, "src")), statSync(join(root, "package-lock.json")).mtimeMs);
if (stale) {
  const { build } = await import("vite");
  const started = Date.now();
  await build({ configFile: join(root, "src/console/vite.config.ts") });
  console.error(`handsafe: built the web console into dist/console (${Date.now() - started} ms)`);
}
