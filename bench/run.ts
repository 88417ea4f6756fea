/** `npm run bench`: every benchmark, each figure next to a ceiling measured in the same run. */
import { benchActivation } from "./activation.ts";
import { benchBackup } from "./backup.ts";
import { benchCrypto } from "./crypto.ts";
import { benchHpke } from "./hpke.ts";
import { benchMessaging } from "./messaging.ts";
import { benchTrustzone } from "./trustzone.ts";
import { stealMeter } from "./steal.ts";
import { aimMet, aimText, type BenchResult } from "./types.ts";
import { benchUpdates } from "./updates.ts";

/** Every figure that carries an issue's aim, for the summary at the end. */
const aimed: BenchResult[] = [];

function print(results: BenchResult[]): void {
  for (const r of results) {
    if (r.aim !== undefined && r.ratio !== undefined) aimed.push(r);
    const value = `${r.value >= 100 ? r.value.toFixed(0) : r.value.toFixed(2)} ${r.unit}`;
    const ceiling = r.ceiling
      ? `   ceiling: ${r.ceiling.name} = ${r.ceiling.value.toFixed(0)}   ratio ${r.ratio! < 0.1 ? r.ratio!.toFixed(3) : r.ratio!.toFixed(2)}`
      : "";
    const aim =
      r.aim !== undefined && r.ratio !== undefined
        ? `   aim ${aimText(r.aim)} (issue ${r.aim.issue}): ${aimMet(r.aim, r.ratio) ? "met" : "MISSED"}`
        : "";
    console.log(`  ${r.name.padEnd(58)} ${value.padStart(22)}${ceiling}${aim}`);
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

// The issues' aims in one place: what this machine, in this run, met and missed.
const missed = aimed.filter((r) => !aimMet(r.aim!, r.ratio!));
console.log(`aims: ${aimed.length - missed.length} of ${aimed.length} met in this run`);
for (const r of missed)
  console.log(
    `  missed: ${r.name.trim()}: ratio ${r.ratio!.toFixed(2)}, aim ${aimText(r.aim!)} (issue ${r.aim!.issue})`,
  );
