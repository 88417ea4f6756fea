/**
 * A job every `intervalMs` on an unref'd timer, one pass at a time: a tick that finds the last pass
 * still running skips, and `runOnce()` (tests, a demo) joins the pass in flight rather than starting
 * a second. `stop()` clears the timer and waits for the pass in flight. A pass that fails goes to
 * `onError` from the timer; `runOnce()` callers see the failure themselves.
 */
export interface PeriodicJob<T> {
  runOnce(): Promise<T>;
  stop(): Promise<void>;
}

export function startPeriodic<T>(
  pass: () => Promise<T>,
  intervalMs: number,
  onError: (err: unknown) => void,
): PeriodicJob<T> {
  let running: Promise<T> | undefined;
  const runOnce = () => {
    running ??= pass().finally(() => {
      running = undefined;
    });
    return running;
  };
  const timer = setInterval(() => {
    runOnce().catch(onError);
  }, intervalMs);
  timer.unref();
  return {
    runOnce,
    async stop() {
      clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}
