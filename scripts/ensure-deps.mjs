// Runs before `npm start`, `npm test` and `npm run bench`: installs the locked dependencies when
// they are missing or older than package-lock.json, so a fresh clone needs no other command.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

const stamp = "node_modules/.handsafe-lock-sha256";
const want = createHash("sha256").update(readFileSync("package-lock.json")).digest("hex");
const have = existsSync(stamp) ? readFileSync(stamp, "utf8").trim() : "";
if (have !== want) {
  console.error("handsafe: installing the locked dependencies (npm ci) — once per change of package-lock.json");
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const r = spawnSync(npm, ["ci", "--no-audit", "--no-fund"], { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
  writeFileSync(stamp, `${want}\n`);
}
