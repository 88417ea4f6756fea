/** Polls `check` every 5 ms until it holds; throws "timed out: <what>" after `ms`. */
export async function until(
  check: () => boolean | Promise<boolean>,
  ms = 2000,
  what = "condition",
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
