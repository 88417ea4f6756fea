/** `npm run bench`: every benchmark, each figure next to a ceiling measured in the same run. */
import { benchActivation } from "./activation.ts";
import { benchBackup } from "./backup.ts";
import { benchCrypto } from "./crypto.ts";
import { benchHpke } from "./hpke.ts";
import { benchMessaging } from "./messaging.ts";
import { benchTrustzone } from "./trustzone.ts";
import { stealMeter } from "./steal.ts";
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

/** One section: its results, then how much CPU time the hypervisor took from this machine meanwhile. */
async function section(title: string, run: () => Promise<BenchResult[]>): Promise<void> {
  console.log(title);
  const steal = stealMeter();
  print(await run());
  const share = steal();
  if (share !== undefined && share >= 0.01)
    console.log(
      `  (CPU time stolen by the hypervisor meanwhile: ${(share * 100).toFixed(0)}% — expect noisier figures)`,
    );
  console.log("");
}

console.log("handsafe benchmarks (2 shared cores: compare ratios within one run, not absolutes)\n");
await section("crypto", async () => [...(await benchCrypto()), ...(await benchHpke())]);
await section("activation over HTTPS", benchActivation);
await section("updates", benchUpdates);
await section("secure messaging over HTTPS", benchMessaging);
await section("trust-zone containers", benchTrustzone);
await section("secure backup", benchBackup);
