/** Milliseconds since the epoch of the newest file under `dir` matching `pattern` (0 for none). */
export function newestSource(dir: string, pattern: RegExp): number;
