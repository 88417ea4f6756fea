/**
 * One measured figure. `ceiling` is the bound it is compared with, measured in the same run on the
 * same machine (absolute numbers on a shared 2-core box are noisy; ratios are what to compare), and
 * `ratio` = value / ceiling.value.
 */
export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  ceiling?: { name: string; value: number };
  ratio?: number;
  /** The ratio an issue asks of this figure: at least `min`, or at most `max` (docs/benchmarks.md). */
  aim?: Aim;
}

export interface Aim {
  /** The issue that set it. */
  issue: number;
  min?: number;
  max?: number;
}

/** Whether `ratio` meets `aim`. */
export function aimMet(aim: Aim, ratio: number): boolean {
  return (aim.min === undefined || ratio >= aim.min) && (aim.max === undefined || ratio <= aim.max);
}

/** "≥ 0.70" or "≤ 1.00". */
export function aimText(aim: Aim): string {
  return [
    ...(aim.min === undefined ? [] : [`≥ ${aim.min.toFixed(2)}`]),
    ...(aim.max === undefined ? [] : [`≤ ${aim.max.toFixed(2)}`]),
  ].join(" and ");
}
