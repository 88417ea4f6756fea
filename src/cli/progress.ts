/**
 * A dependency-free progress bar for long CLI work (uploads, campaign rollouts), drawn on stderr so
 * stdout stays clean for results. On a terminal it redraws one line in place; elsewhere (a pipe, a
 * CI log) it prints a plain line only when the percent moves by a step, so logs stay short.
 *
 *   const bar = createProgressBar({ label: "upload", total: size });
 *   bar.update(sentBytes);            // a count out of total
 *   bar.finish();
 */

export interface ProgressBarOptions {
  /** Shown before the bar. */
  label?: string;
  /** What update() counts up to (default 100: update() then takes a percent). */
  total?: number;
  /** Where to draw (default process.stderr). */
  stream?: NodeJS.WriteStream;
  /** Bar width in characters (default 30). */
  width?: number;
  /** Off a terminal: print when the percent moved by at least this much (default 10). */
  logStep?: number;
}

export interface ProgressBar {
  /** `done` out of `total` (clamped); `detail` follows the percent, e.g. "installed 12 · failed 1". */
  update(done: number, detail?: string): void;
  /** Ends the bar's line; `detail`, when given, replaces it. */
  finish(detail?: string): void;
}

/** "[#######-------]  46.7%" */
export function renderBar(fraction: number, width: number): string {
  const f = Math.min(Math.max(Number.isFinite(fraction) ? fraction : 0, 0), 1);
  const full = Math.round(f * width);
  return `[${"#".repeat(full)}${"-".repeat(width - full)}] ${(f * 100).toFixed(1).padStart(5)}%`;
}

export function createProgressBar(options: ProgressBarOptions = {}): ProgressBar {
  const stream = options.stream ?? process.stderr;
  const total = options.total && options.total > 0 ? options.total : 100;
  const width = options.width ?? 30;
  const step = options.logStep ?? 10;
  const label = options.label ? `${options.label} ` : "";
  const tty = Boolean(stream.isTTY);
  let lastPercent = Number.NEGATIVE_INFINITY;
  let lastDetail: string | undefined;
  let drawn = false;

  return {
    update(done, detail) {
      const fraction = Math.min(Math.max(done / total, 0), 1);
      const text = `${label}${renderBar(fraction, width)}${detail ? `  ${detail}` : ""}`;
      if (tty) {
        stream.write(`\r\x1b[2K${text.slice(0, (stream.columns || 120) - 1)}`);
        drawn = true;
        return;
      }
      const percent = Math.floor(fraction * 100);
      const moved = percent - lastPercent >= step || (percent === 100 && lastPercent !== 100);
      if (moved || (detail !== undefined && detail !== lastDetail)) {
        stream.write(`${text}\n`);
        lastPercent = percent;
        lastDetail = detail;
      }
    },
    finish(detail) {
      if (tty) {
        if (detail !== undefined) stream.write(`\r\x1b[2K${label}${detail}`);
        if (drawn || detail !== undefined) stream.write("\n");
        drawn = false;
        return;
      }
      if (detail !== undefined) stream.write(`${label}${detail}\n`);
    },
  };
}
