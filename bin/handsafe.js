#!/usr/bin/env node
// The `handsafe` command. It runs dist/cli/handsafe.mjs, one JavaScript file esbuild bundles from
// src/cli/main.ts (packages stay in node_modules): that starts in a fraction of the time tsx takes
// to compile each source module on every run. The bundle is (re)built here whenever a source under
// src/ (or package.json) is newer than it, so an edited checkout never runs stale code; should the
// build fail, or with HANDSAFE_CLI_NO_BUNDLE set, the sources run through tsx.
import { existsSync, mkdirSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { newestSource } from "../scripts/newest-source.mjs";

const root = join(import.meta.dirname, "..");
// Two folders below the root, as src/platform is: the sources' relative paths to dist/ hold in both.
const bundle = join(root, "dist", "cli", "handsafe.mjs");

const fresh = () =>
  existsSync(bundle) &&
  statSync(bundle).mtimeMs >=
    Math.max(newestSource(join(root, "src"), /\.ts$/), statSync(join(root, "package.json")).mtimeMs);

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

/** True when the bundle is there and current, built now if need be. */
async function bundleReady() {
  if (process.env.HANDSAFE_CLI_NO_BUNDLE !== undefined) return false;
  try {
    if (!fresh()) await build();
    return true;
  } catch {
    return false;
  }
}

if (await bundleReady()) await import(pathToFileURL(bundle).href);
else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli/main.ts");
}
