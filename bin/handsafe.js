#!/usr/bin/env node
// The `handsafe` command. It runs dist/cli/handsafe.mjs, one JavaScript file esbuild bundles from
// src/cli/main.ts (packages stay in node_modules): that starts in a fraction of the time tsx takes
// to compile each source module on every run. The bundle is (re)built here whenever a source under
// src/ is newer than it, so an edited checkout never runs stale code; should the build fail, the
// sources run through tsx as before.
import { existsSync, mkdirSync, readdirSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const root = join(import.meta.dirname, "..");
// Two folders below the root, as src/platform is: the sources' relative paths to dist/ hold in both.
const bundle = join(root, "dist", "cli", "handsafe.mjs");

/** The newest modification time of a TypeScript source under `dir`. */
function newest(dir) {
  let t = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) t = Math.max(t, newest(path));
    else if (entry.name.endsWith(".ts")) t = Math.max(t, statSync(path).mtimeMs);
  }
  return t;
}

async function build() {
  const { build } = await import("esbuild");
  mkdirSync(join(root, "dist", "cli"), { recursive: true });
  // Written aside and renamed: two commands started at once never run a half-written bundle.
  const temp = `${bundle}.${process.pid}.tmp`;
  await build({
    entryPoints: [join(root, "src", "cli", "main.ts")],
    outfile: temp,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    conditions: ["node"],
    packages: "external",
    logLevel: "silent",
  });
  renameSync(temp, bundle);
}

let ready = false;
try {
  ready =
    existsSync(bundle) &&
    statSync(bundle).mtimeMs >= Math.max(newest(join(root, "src")), statSync(join(root, "package.json")).mtimeMs);
  if (!ready && process.env.HANDSAFE_CLI_NO_BUNDLE === undefined) {
    await build();
    ready = true;
  }
} catch {
  ready = false;
}
if (ready && process.env.HANDSAFE_CLI_NO_BUNDLE === undefined) await import(pathToFileURL(bundle).href);
else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli/main.ts");
}
