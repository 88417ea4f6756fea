/** The campaign CLI's pure pieces: the progress bar (TTY and log modes), counts, windows. */
import { describe, expect, it } from "vitest";
import { countsLine, parseWindow } from "../../src/cli/campaigns.ts";
import { createProgressBar, renderBar } from "../../src/cli/progress.ts";

function fakeStream(isTTY: boolean) {
  const out: string[] = [];
  return {
    out,
    stream: { isTTY, columns: 80, write: (s: string) => out.push(s) } as unknown as NodeJS.WriteStream,
  };
}

describe("campaign CLI", () => {
  it("draws a bar with its percent", () => {
    expect(renderBar(0.5, 10)).toBe("[#####-----]  50.0%");
    expect(renderBar(2, 4)).toBe("[####] 100.0%");
  });
  it("off a terminal, logs one line per step and when the counts change", () => {
    const { out, stream } = fakeStream(false);
    const bar = createProgressBar({ label: "campaign", total: 100, stream, width: 4 });
    bar.update(1, "notified 9");
    bar.update(2, "notified 9");
    bar.update(2, "installed 1");
    bar.update(100, "installed 10");
    bar.finish();
    expect(out).toEqual([
      "campaign [----]   1.0%  notified 9\n",
      "campaign [----]   2.0%  installed 1\n",
      "campaign [####] 100.0%  installed 10\n",
    ]);
  });
  it("on a terminal, redraws one line", () => {
    const { out, stream } = fakeStream(true);
    const bar = createProgressBar({ total: 10, stream, width: 2 });
    bar.update(5);
    bar.finish();
    expect(out).toEqual(["\r\x1b[2K[# ]  50.0%".replace("# ", "#-"), "\n"]);
  });
  it("summarises counts and parses windows", () => {
    expect(countsLine({ pending: 0, installed: 3, failed: 1 })).toBe("installed 3 · failed 1");
    expect(parseWindow("22-4")).toEqual({ startHourUtc: 22, endHourUtc: 4 });
    expect(() => parseWindow("late")).toThrow(/--window/);
  });
});
