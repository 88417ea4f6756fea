/** Timing helpers shared by the update benchmarks. */

/** MB/s (10^6 bytes per second), as network and disk figures are quoted. */
export const mbPerSecond = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);

/** Milliseconds `fn` took. */
export function timed(fn: () => void): number {
  const start = performance.now();
  fn();
  return performance.now() - start;
}

export async function timedAsync(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

/**
 * The best of `rounds` runs of each measurement: by default the fastest (the smallest milliseconds;
 * on a shared machine the fastest run is the least disturbed one), or by `best` (Math.max for
 * rates). The order rotates every round, so that no measurement always runs first or always
 * follows the same one.
 */
export async function bestOfRounds<K extends string>(
  rounds: number,
  runs: Record<K, () => Promise<number>>,
  best: (a: number, b: number) => number = Math.min,
): Promise<Record<K, number>> {
  const names = Object.keys(runs) as K[];
  const kept = {} as Record<K, number>;
  for (let r = 0; r < rounds; r++)
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + r) % names.length]!;
      const value = await runs[name]();
      kept[name] = name in kept ? best(kept[name], value) : value;
    }
  return kept;
}

/**
 * Operations per second of a synchronous `op`: a warm-up of `warmupMs`, then about `ms` of calls in
 * batches of 4 (so reading the clock costs little next to the operation).
 */
export function opsPerSecond(op: () => unknown, ms: number, warmupMs = 200): number {
  const warmEnd = performance.now() + warmupMs;
  while (performance.now() < warmEnd) op();
  let count = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < 4; i++) op();
    count += 4;
    now = performance.now();
  }
  return (count * 1000) / (now - start);
}

/** Completed calls per second when each worker runs its call in a loop for `ms` (concurrency = workers). */
export async function forDuration(ms: number, workers: Array<() => Promise<unknown>>): Promise<number> {
  const end = performance.now() + ms;
  let done = 0;
  const start = performance.now();
  await Promise.all(
    workers.map(async (work) => {
      while (performance.now() < end) {
        await work();
        done++;
      }
    }),
  );
  return done / ((performance.now() - start) / 1000);
}

/**
 * The best rate of each `forDuration` measurement over `rounds` rounds of `ms` each, the order
 * rotating every round (bestOfRounds): a figure and its ceiling meet the same disturbances.
 */
export function bestRates<K extends string>(
  rounds: number,
  ms: number,
  runs: Record<K, Array<() => Promise<unknown>>>,
): Promise<Record<K, number>> {
  const timed = Object.fromEntries(
    (Object.keys(runs) as K[]).map((name) => [name, () => forDuration(ms, runs[name])]),
  ) as Record<K, () => Promise<number>>;
  return bestOfRounds(rounds, timed, Math.max);
}
