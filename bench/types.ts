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
}
