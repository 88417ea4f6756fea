/** `npm run bench`: every benchmark, each figure next to a ceiling measured in the same run. */
import { benchActivation } from "./activation.ts";
import { benchBackup } from "./backup.ts";
import { benchCrypto } from "./crypto.ts";
import { benchHpke } from "./hpke.ts";
import { benchMessaging } from "./messaging.ts";
import { benchTrustzone } from "./trustzone.ts";
import type { BenchResult } from "./types.ts";
import { benchUpdates } from "./updates.ts";

function print(results: BenchResult[]): void {
  for (const r of results) {
    const value = `${r.value >= 100 ? r.value.toFixed(0) : r.value.toFixed(2)} ${r.unit}`;
    const ceiling = r.ceiling
      ? `   ceiling: ${r.ceiling.name} = ${r.ceiling.value.toFixed(0)}   ratio ${r.ratio! < 0.1 ? r.ratio!.toFixed(3) : r.ratio!.toFixed(2)}`
      : "";
    console.log(`  ${r.name.padEnd(58)} ${value.padStart(22)}${ceiling}`);
  }
}

console.log("handsafe benchmarks (2 shared cores: compare ratios within one run, not absolutes)\n");
console.log("crypto");
print(await benchCrypto());
print(await benchHpke());
console.log("\nactivation over HTTPS");
print(await benchActivation());
console.log("\nupdates");
print(await benchUpdates());
console.log("\nsecure messaging over HTTPS");
print(await benchMessaging());
console.log("\ntrust-zone containers");
print(await benchTrustzone());
console.log("\nsecure backup");
print(await benchBackup());
