/**
 * Campaigns' protocol core — no I/O. Spec: docs/protocols/campaigns.md.
 *
 *   draft ──start──► running ⇄ paused (pause/resume, or auto-pause on the error threshold)
 *                      └──────┴──► completed (every enrolled device final, last stage) | aborted
 *
 *   per device: pending → notified → downloading → verified → installed | failed | rolled_back
 *
 * Who is in the rollout is a pure function of (campaign id, device id): the device's bucket
 * (0–99, from SHA-256) against the cumulative stage percentages.
 */
import { concatBytes, utf8 } from "../../core/codec/bytes.ts";
import { sha256 } from "../../core/crypto/hash.ts";
import { HandsafeError } from "../../core/errors.ts";
import { checkVersionRange, compareVersions, isVersion, satisfies, type VersionRange } from "../version.ts";

export type { VersionRange };

/** Domain separation of the bucket hash (docs/protocols/campaigns.md §Labels). */
export const BUCKET_LABEL = "handsafe/v1/campaigns/bucket";
export const DEFAULT_CHANNEL = "stable";
export const CAMPAIGN_ID = /^cmp_[A-Za-z0-9_-]{16}$/;
/** Channel and group names: short, lower-case, URL-safe. */
export const LABEL_NAME = /^[a-z0-9][a-z0-9._-]{0,31}$/;
export const MAX_STAGES = 20;
export const MAX_GROUPS = 32;
export const MAX_TARGET_IDS = 10_000;

export const DEVICE_STATES = [
  "pending",
  "notified",
  "downloading",
  "verified",
  "installed",
  "failed",
  "rolled_back",
] as const;
export type DeviceState = (typeof DEVICE_STATES)[number];
/** What a handset may report (pending is the server's own starting state). */
export const REPORTED_STATES = [
  "notified",
  "downloading",
  "verified",
  "installed",
  "failed",
  "rolled_back",
] as const;
export type ReportedState = (typeof REPORTED_STATES)[number];
export const FINAL_STATES: ReadonlySet<DeviceState> = new Set(["installed", "failed", "rolled_back"]);

export const CAMPAIGN_STATES = ["draft", "running", "paused", "completed", "aborted"] as const;
export type CampaignState = (typeof CAMPAIGN_STATES)[number];
export type CampaignAction = "start" | "pause" | "resume" | "abort" | "advance" | "complete";

export interface MaintenanceWindow {
  /** 0–23, inclusive. */
  startHourUtc: number;
  /** 0–23, exclusive; below startHourUtc means the window wraps past midnight. */
  endHourUtc: number;
}

export interface CampaignTarget {
  models?: string[];
  versionRange?: VersionRange;
  groups?: string[];
  deviceIds?: string[];
}

/** The package facts targeting needs (a snapshot taken when the campaign is created). */
export interface TargetPackage {
  id: string;
  version: string;
  kind: "full" | "delta";
  fromVersion?: string | null | undefined;
  models: string[];
  channel: string;
  versionRange?: VersionRange | null | undefined;
}

/** What targeting knows of a device. */
export interface TargetDevice {
  id: string;
  model: string;
  /** The installed version: the last one it reported installed, else its provisioned firmware. */
  version: string;
  /** Default "stable". */
  channel: string;
  groups: readonly string[];
}

// ---------------------------------------------------------------------------------------------
// Input checks (at the admin boundary).

export interface CampaignSpec {
  stages: number[];
  errorThreshold: number;
  maintenanceWindow?: MaintenanceWindow | null | undefined;
  target: CampaignTarget;
  channel?: string | undefined;
}

/** Stages are cumulative percentages: integers 1–100, strictly ascending, the last 100. */
export function checkStages(stages: readonly number[]): number[] {
  const ok =
    Array.isArray(stages) &&
    stages.length >= 1 &&
    stages.length <= MAX_STAGES &&
    stages.every((p, i) => Number.isInteger(p) && p >= 1 && p <= 100 && (i === 0 || p > stages[i - 1]!)) &&
    stages[stages.length - 1] === 100;
  if (!ok)
    throw new HandsafeError(
      "campaigns.invalid_stages",
      `stages must be 1–${MAX_STAGES} integer percentages, strictly ascending, the last one 100`,
    );
  return [...stages];
}

export function checkMaintenanceWindow(w: MaintenanceWindow): MaintenanceWindow {
  const hour = (h: number) => Number.isInteger(h) && h >= 0 && h <= 23;
  if (!hour(w.startHourUtc) || !hour(w.endHourUtc) || w.startHourUtc === w.endHourUtc)
    throw new HandsafeError(
      "campaigns.invalid_window",
      "a maintenance window is two different whole UTC hours 0–23 (start inclusive, end exclusive)",
    );
  return { startHourUtc: w.startHourUtc, endHourUtc: w.endHourUtc };
}

/** Validates a campaign's rules; returns them normalised (names sorted, duplicates dropped). */
export function checkCampaignSpec(spec: CampaignSpec): {
  stages: number[];
  errorThreshold: number;
  maintenanceWindow: MaintenanceWindow | null;
  target: CampaignTarget;
  channel: string | undefined;
} {
  const stages = checkStages(spec.stages);
  if (
    typeof spec.errorThreshold !== "number" ||
    !Number.isFinite(spec.errorThreshold) ||
    spec.errorThreshold < 0 ||
    spec.errorThreshold > 1
  )
    throw new HandsafeError("campaigns.invalid_threshold", "errorThreshold is a fraction from 0 to 1");
  if (spec.channel !== undefined) checkLabel(spec.channel, "channel");
  const t = spec.target ?? {};
  const target: CampaignTarget = {};
  if (t.models?.length) target.models = uniqueSorted(t.models);
  if (t.groups?.length) target.groups = uniqueSorted(t.groups.map((g) => checkLabel(g, "group")));
  if (t.deviceIds?.length) {
    if (t.deviceIds.length > MAX_TARGET_IDS)
      throw new HandsafeError("campaigns.invalid_target", `at most ${MAX_TARGET_IDS} device ids`);
    target.deviceIds = uniqueSorted(t.deviceIds);
  }
  if (t.versionRange) {
    try {
      target.versionRange = checkVersionRange(t.versionRange);
    } catch (e) {
      throw new HandsafeError("campaigns.invalid_target", (e as Error).message, { cause: e });
    }
  }
  return {
    stages,
    errorThreshold: spec.errorThreshold,
    maintenanceWindow: spec.maintenanceWindow ? checkMaintenanceWindow(spec.maintenanceWindow) : null,
    target,
    channel: spec.channel,
  };
}

export function checkLabel(name: string, what: "channel" | "group"): string {
  if (typeof name !== "string" || !LABEL_NAME.test(name))
    throw new HandsafeError(
      `campaigns.invalid_${what}`,
      `a ${what} name is 1–32 characters of a-z 0-9 . _ - (starting with a letter or digit)`,
    );
  return name;
}

export function checkGroups(groups: readonly string[]): string[] {
  if (groups.length > MAX_GROUPS)
    throw new HandsafeError("campaigns.invalid_group", `a device is in at most ${MAX_GROUPS} groups`);
  return uniqueSorted(groups.map((g) => checkLabel(g, "group")));
}

function uniqueSorted(xs: readonly string[]): string[] {
  return [...new Set(xs)].sort();
}

// ---------------------------------------------------------------------------------------------
// Targeting.

/**
 * Whether a campaign of `pkg` on `channel` should update `device`. Every criterion given must
 * hold (AND); within models, groups and deviceIds any one entry suffices (OR). Beyond the
 * operator's target, the package's own rules always apply: its models, its versionRange, a delta's
 * fromVersion, and no device already at or above the package's version (never a downgrade).
 */
export function matchesTarget(
  device: TargetDevice,
  target: CampaignTarget,
  pkg: TargetPackage,
  channel: string,
): boolean {
  if (device.channel !== channel) return false;
  if (!pkg.models.includes(device.model)) return false;
  if (target.models?.length && !target.models.includes(device.model)) return false;
  if (target.deviceIds?.length && !target.deviceIds.includes(device.id)) return false;
  if (target.groups?.length && !target.groups.some((g) => device.groups.includes(g))) return false;
  // A device whose version we cannot read is never updated: we could not tell an upgrade.
  if (!isVersion(device.version)) return false;
  if (compareVersions(device.version, pkg.version) >= 0) return false;
  if (pkg.kind === "delta" && (!pkg.fromVersion || compareVersions(device.version, pkg.fromVersion) !== 0))
    return false;
  if (pkg.versionRange && !satisfies(device.version, pkg.versionRange)) return false;
  if (target.versionRange && !satisfies(device.version, target.versionRange)) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Staged rollout.

/**
 * The device's rollout bucket in this campaign, 0–99: the first two bytes (big-endian) of
 * SHA-256(BUCKET_LABEL ‖ 0x00 ‖ campaignId ‖ 0x00 ‖ deviceId), mod 100. Deterministic, so every
 * node and every call agree; per campaign, so the same devices are not always first.
 */
export function rolloutBucket(campaignId: string, deviceId: string): number {
  const zero = new Uint8Array(1);
  const h = sha256(concatBytes(utf8(BUCKET_LABEL), zero, utf8(campaignId), zero, utf8(deviceId)));
  return ((h[0]! << 8) | h[1]!) % 100;
}

/** A device is in stage s when its bucket < stages[s] (stages are cumulative percentages). */
export function inStage(bucket: number, stages: readonly number[], stage: number): boolean {
  const limit = stages[stage];
  return limit !== undefined && bucket < limit;
}

// ---------------------------------------------------------------------------------------------
// Device state machine.

const DEVICE_NEXT: Record<DeviceState, readonly DeviceState[]> = {
  pending: ["notified"],
  notified: ["downloading", "failed"],
  downloading: ["verified", "failed"],
  verified: ["installed", "failed", "rolled_back"],
  // A health check that fails after the switch still rolls back.
  installed: ["rolled_back"],
  failed: [],
  rolled_back: [],
};

export function isFinal(state: DeviceState): boolean {
  return FINAL_STATES.has(state);
}

/**
 * The device's state after a report. Repeating the current state is accepted (a retried request,
 * or downloading with a new percent); anything out of order is campaigns.bad_transition (409).
 */
export function nextDeviceState(current: DeviceState, reported: ReportedState): DeviceState {
  if (reported === current) return current;
  if (DEVICE_NEXT[current].includes(reported)) return reported;
  throw new HandsafeError(
    "campaigns.bad_transition",
    `a device in state ${current} cannot report ${reported}`,
    { status: 409, details: { from: current, to: reported } },
  );
}

// ---------------------------------------------------------------------------------------------
// Campaign state machine.

const CAMPAIGN_NEXT: Record<CampaignAction, { from: readonly CampaignState[]; to: CampaignState }> = {
  start: { from: ["draft"], to: "running" },
  pause: { from: ["running"], to: "paused" },
  resume: { from: ["paused"], to: "running" },
  advance: { from: ["running"], to: "running" },
  abort: { from: ["draft", "running", "paused"], to: "aborted" },
  complete: { from: ["running", "paused"], to: "completed" },
};

/** The campaign's state after an action, or campaigns.bad_state (409). */
export function campaignTransition(state: CampaignState, action: CampaignAction): CampaignState {
  const rule = CAMPAIGN_NEXT[action];
  if (!rule.from.includes(state))
    throw new HandsafeError("campaigns.bad_state", `cannot ${action} a campaign that is ${state}`, {
      status: 409,
      details: { state, action },
    });
  return rule.to;
}

// ---------------------------------------------------------------------------------------------
// Error threshold, progress, maintenance window.

export type StateCounts = Record<DeviceState, number>;

export function emptyCounts(): StateCounts {
  return Object.fromEntries(DEVICE_STATES.map((s) => [s, 0])) as StateCounts;
}

export interface ThresholdVerdict {
  exceeded: boolean;
  failed: number;
  final: number;
  rate: number;
}

/**
 * Over the devices the current stage includes: (failed + rolled_back) / (installed + failed +
 * rolled_back). Exceeded when that rate is strictly above the threshold; nothing final yet is
 * never exceeded.
 */
export function errorThresholdVerdict(counts: StateCounts, threshold: number): ThresholdVerdict {
  const failed = counts.failed + counts.rolled_back;
  const final = failed + counts.installed;
  const rate = final === 0 ? 0 : failed / final;
  return { exceeded: final > 0 && rate > threshold, failed, final, rate };
}

export interface Progress {
  total: number;
  byState: StateCounts;
  /** Final devices (installed, failed, rolled back) over all enrolled, in percent, one decimal. */
  percentDone: number;
}

export function progressOf(counts: StateCounts): Progress {
  const total = DEVICE_STATES.reduce((n, s) => n + counts[s], 0);
  const final = counts.installed + counts.failed + counts.rolled_back;
  return {
    total,
    byState: { ...counts },
    percentDone: total === 0 ? 0 : Math.floor((final * 1000) / total) / 10,
  };
}

/** Whether `nowMs` falls inside the window (UTC hours; start inclusive, end exclusive; may wrap). */
export function insideWindow(window: MaintenanceWindow | null, nowMs: number): boolean {
  if (!window) return true;
  const h = new Date(nowMs).getUTCHours();
  return window.startHourUtc < window.endHourUtc
    ? h >= window.startHourUtc && h < window.endHourUtc
    : h >= window.startHourUtc || h < window.endHourUtc;
}
