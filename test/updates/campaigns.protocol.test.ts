/** Campaigns' pure core: targeting, buckets, both state machines, the error threshold, windows. */
import { describe, expect, it } from "vitest";
import { HandsafeError } from "../../src/core/errors.ts";
import {
  type CampaignTarget,
  campaignTransition,
  checkCampaignSpec,
  emptyCounts,
  errorThresholdVerdict,
  inStage,
  insideWindow,
  matchesTarget,
  nextDeviceState,
  progressOf,
  rolloutBucket,
  type TargetDevice,
  type TargetPackage,
} from "../../src/updates/campaigns/protocol.ts";

const pkg: TargetPackage = {
  id: "pkg_1",
  version: "2.0.0",
  kind: "full",
  models: ["HS-100", "HS-200"],
  channel: "stable",
};
const dev = (over: Partial<TargetDevice> = {}): TargetDevice => ({
  id: "dev_a",
  model: "HS-100",
  version: "1.0.0",
  channel: "stable",
  groups: [],
  ...over,
});
const match = (d: TargetDevice, t: CampaignTarget = {}, p = pkg, channel = "stable") =>
  matchesTarget(d, t, p, channel);

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof HandsafeError ? e.code : "not a HandsafeError";
  }
  return undefined;
}

describe("targeting", () => {
  it("matches by model, within the package's models", () => {
    expect(match(dev(), { models: ["HS-100"] })).toBe(true);
    expect(match(dev({ model: "HS-200" }), { models: ["HS-100"] })).toBe(false);
    expect(match(dev({ model: "HS-900" }))).toBe(false);
  });
  it("matches by version range (inclusive) and never downgrades or reinstalls", () => {
    expect(match(dev({ version: "1.2" }), { versionRange: { min: "1.2.0", max: "1.5" } })).toBe(true);
    expect(match(dev({ version: "1.5.1" }), { versionRange: { min: "1.2.0", max: "1.5" } })).toBe(false);
    expect(match(dev({ version: "2.0" }))).toBe(false);
    expect(match(dev({ version: "3.1.0" }))).toBe(false);
    expect(match(dev({ version: "1.0.0-beta" }))).toBe(false);
  });
  it("a delta applies only to its fromVersion, a package's own range always applies", () => {
    const delta: TargetPackage = { ...pkg, kind: "delta", fromVersion: "1.9" };
    expect(match(dev({ version: "1.9.0" }), {}, delta)).toBe(true);
    expect(match(dev({ version: "1.8.0" }), {}, delta)).toBe(false);
    expect(match(dev({ version: "0.9" }), {}, { ...pkg, versionRange: { min: "1.0" } })).toBe(false);
  });
  it("matches by group (any of), by device list, and by channel", () => {
    expect(match(dev({ groups: ["eu", "lab"] }), { groups: ["lab"] })).toBe(true);
    expect(match(dev({ groups: ["eu"] }), { groups: ["lab"] })).toBe(false);
    expect(match(dev(), { deviceIds: ["dev_a"] })).toBe(true);
    expect(match(dev(), { deviceIds: ["dev_b"] })).toBe(false);
    expect(match(dev({ channel: "beta" }))).toBe(false);
    expect(match(dev({ channel: "beta" }), {}, pkg, "beta")).toBe(true);
  });
});

describe("staged rollout buckets", () => {
  it("are deterministic, 0–99, per campaign", () => {
    const b = rolloutBucket("cmp_x", "dev_a");
    expect(rolloutBucket("cmp_x", "dev_a")).toBe(b);
    expect(b).toBeGreaterThanOrEqual(0);
    expect(b).toBeLessThan(100);
    const ids = Array.from({ length: 50 }, (_, i) => `dev_${i}`);
    expect(ids.map((d) => rolloutBucket("cmp_x", d))).not.toEqual(ids.map((d) => rolloutBucket("cmp_y", d)));
  });
  it("spread a fleet evenly: a 10% stage takes about 10% of 10,000 devices", () => {
    const n = Array.from({ length: 10_000 }, (_, i) => rolloutBucket("cmp_s", `dev_${i}`)).filter((b) =>
      inStage(b, [10, 50, 100], 0),
    ).length;
    expect(n).toBeGreaterThan(900);
    expect(n).toBeLessThan(1100);
  });
  it("stages are cumulative", () => {
    expect(inStage(9, [10, 100], 0)).toBe(true);
    expect(inStage(10, [10, 100], 0)).toBe(false);
    expect(inStage(10, [10, 100], 1)).toBe(true);
    expect(inStage(99, [10, 100], 2)).toBe(false);
  });
});

describe("device state machine", () => {
  it("walks the happy path and accepts repeats", () => {
    expect(nextDeviceState("pending", "notified")).toBe("notified");
    expect(nextDeviceState("notified", "downloading")).toBe("downloading");
    expect(nextDeviceState("downloading", "downloading")).toBe("downloading");
    expect(nextDeviceState("downloading", "verified")).toBe("verified");
    expect(nextDeviceState("verified", "installed")).toBe("installed");
    expect(nextDeviceState("installed", "rolled_back")).toBe("rolled_back");
    expect(nextDeviceState("verified", "rolled_back")).toBe("rolled_back");
  });
  it("refuses reports out of order", () => {
    expect(code(() => nextDeviceState("notified", "installed"))).toBe("campaigns.bad_transition");
    expect(code(() => nextDeviceState("pending", "downloading"))).toBe("campaigns.bad_transition");
    expect(code(() => nextDeviceState("installed", "downloading"))).toBe("campaigns.bad_transition");
    expect(code(() => nextDeviceState("failed", "installed"))).toBe("campaigns.bad_transition");
    expect(code(() => nextDeviceState("rolled_back", "installed"))).toBe("campaigns.bad_transition");
  });
});

describe("campaign state machine", () => {
  it("draft → running ⇄ paused → aborted | completed", () => {
    expect(campaignTransition("draft", "start")).toBe("running");
    expect(campaignTransition("running", "pause")).toBe("paused");
    expect(campaignTransition("paused", "resume")).toBe("running");
    expect(campaignTransition("paused", "abort")).toBe("aborted");
    expect(campaignTransition("running", "complete")).toBe("completed");
  });
  it("refuses the rest", () => {
    expect(code(() => campaignTransition("draft", "pause"))).toBe("campaigns.bad_state");
    expect(code(() => campaignTransition("paused", "advance"))).toBe("campaigns.bad_state");
    expect(code(() => campaignTransition("aborted", "resume"))).toBe("campaigns.bad_state");
    expect(code(() => campaignTransition("completed", "start"))).toBe("campaigns.bad_state");
  });
});

describe("campaign rules", () => {
  const base = { stages: [10, 100], errorThreshold: 0.1, target: {} };
  it("stages ascend to 100", () => {
    expect(checkCampaignSpec(base).stages).toEqual([10, 100]);
    for (const stages of [[], [10, 50], [50, 10, 100], [0, 100], [10, 10, 100], [10.5, 100]])
      expect(code(() => checkCampaignSpec({ ...base, stages }))).toBe("campaigns.invalid_stages");
  });
  it("threshold, window, channel and groups are checked", () => {
    expect(code(() => checkCampaignSpec({ ...base, errorThreshold: 1.5 }))).toBe(
      "campaigns.invalid_threshold",
    );
    expect(
      code(() => checkCampaignSpec({ ...base, maintenanceWindow: { startHourUtc: 3, endHourUtc: 3 } })),
    ).toBe("campaigns.invalid_window");
    expect(code(() => checkCampaignSpec({ ...base, channel: "Beta!" }))).toBe("campaigns.invalid_channel");
    expect(code(() => checkCampaignSpec({ ...base, target: { groups: ["a b"] } }))).toBe(
      "campaigns.invalid_group",
    );
    expect(code(() => checkCampaignSpec({ ...base, target: { versionRange: { min: "2", max: "1" } } }))).toBe(
      "campaigns.invalid_target",
    );
  });
});

describe("error threshold and progress", () => {
  it("pauses only strictly above the threshold, over final devices", () => {
    const c = { ...emptyCounts(), installed: 8, failed: 1, rolled_back: 1, downloading: 50 };
    expect(errorThresholdVerdict(c, 0.2)).toMatchObject({ exceeded: false, failed: 2, final: 10 });
    expect(errorThresholdVerdict(c, 0.1).exceeded).toBe(true);
    expect(errorThresholdVerdict(emptyCounts(), 0).exceeded).toBe(false);
  });
  it("progress counts by state and final share", () => {
    const p = progressOf({ ...emptyCounts(), pending: 1, installed: 1, failed: 1 });
    expect(p).toMatchObject({ total: 3, percentDone: 66.6 });
    expect(p.byState.pending).toBe(1);
  });
});

describe("maintenance window (UTC hours)", () => {
  const at = (h: number) => Date.UTC(2025, 0, 1, h, 30);
  it("a plain window", () => {
    const w = { startHourUtc: 2, endHourUtc: 5 };
    expect([1, 2, 4, 5].map((h) => insideWindow(w, at(h)))).toEqual([false, true, true, false]);
  });
  it("wraps past midnight", () => {
    const w = { startHourUtc: 22, endHourUtc: 4 };
    expect([21, 22, 23, 0, 3, 4].map((h) => insideWindow(w, at(h)))).toEqual([
      false,
      true,
      true,
      true,
      true,
      false,
    ]);
    expect(insideWindow(null, at(12))).toBe(true);
  });
});
