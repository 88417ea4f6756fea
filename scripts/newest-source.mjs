// The newest modification time of the files under a folder whose names match a pattern: what the
// builds that run on demand (the web console, the CLI bundle) compare their output against.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

/** Milliseconds since the epoch of the newest file under `dir` matching `pattern` (0 for none). */
export function newestSource(dir, pattern) {
  let t = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) t = Math.max(t, newestSource(path, pattern));
    else if (pattern.test(entry.name)) t = Math.max(t, statSync(path).mtimeMs);
  }
  return t;
}
