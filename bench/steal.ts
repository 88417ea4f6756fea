import { readFileSync } from "node:fs";

/**
 * The CPU time the hypervisor gave to other guests while a section ran (the `steal` column of
 * /proc/stat), as a share of all CPU time in that section: on a shared virtual machine the figures of
 * a section with much steal are noisier than the ratios suggest. Undefined where /proc/stat is not.
 */
export function stealMeter(): () => number | undefined {
  const start = cpuTimes();
  return () => {
    const end = cpuTimes();
    if (!start || !end) return undefined;
    const total = end.total - start.total;
    return total > 0 ? (end.steal - start.steal) / total : undefined;
  };
}

function cpuTimes(): { total: number; steal: number } | undefined {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
    // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest time is in user)
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
    if (f.length < 8 || f.some((v) => !Number.isFinite(v))) return undefined;
    return { total: f.reduce((a, b) => a + b, 0), steal: f[7]! };
  } catch {
    return undefined;
  }
}
