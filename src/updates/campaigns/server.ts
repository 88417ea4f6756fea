/**
 * The campaign service: the protocol core (protocol.ts) over the platform's storage and audit log,
 * the management service (devices, dynamic-key notifications) and the updates service (packages,
 * per-device content-key wraps). Routes (routes.ts) only parse, authorise and call these.
 */
import type { Kysely } from "kysely";
import { randomToken } from "../../core/crypto/random.ts";
import { HandsafeError, isHandsafeError } from "../../core/errors.ts";
import type { ManagementService } from "../../management/server.ts";
import type { Platform } from "../../platform/context.ts";
import { isVersion, type VersionRange } from "../version.ts";
import {
  type CampaignAction,
  type CampaignTarget,
  campaignTransition,
  checkCampaignSpec,
  checkGroups,
  checkLabel,
  DEFAULT_CHANNEL,
  type DeviceState,
  errorThresholdVerdict,
  inStage,
  isFinal,
  type MaintenanceWindow,
  matchesTarget,
  nextDeviceState,
  type Progress,
  progressOf,
  type ReportedState,
  rolloutBucket,
  type TargetDevice,
} from "./protocol.ts";
import * as store from "./store.ts";

type Db = Kysely<store.CampaignTables>;

/** What campaigns need of a package (the updates service's getPackage answer). */
export interface CampaignPackage {
  id: string;
  version: string;
  kind: "full" | "delta";
  fromVersion?: string | null | undefined;
  models: string[];
  channel: string;
  tufPath: string;
  versionRange?: VersionRange | null | undefined;
}

/** The part of the updates service campaigns call (src/updates/packages.ts provides it). */
export interface CampaignUpdates {
  /** The package, or a 404 HandsafeError (or undefined) when there is none. */
  getPackage(id: string): Promise<CampaignPackage | null | undefined>;
  /** The package's content key wrapped for the device under its current content session key. */
  wrapContentKeyFor(deviceId: string, packageId: string): Promise<string>;
}

export type CampaignManagement = Pick<ManagementService, "getDevice" | "listDevices" | "issueDynamicKey">;

export interface CampaignDeps {
  management: CampaignManagement;
  updates: CampaignUpdates;
}

/** The notification's dynamic-key policy (updates-contract.md §Notification). */
export const NOTIFY_POLICY = { profile: "update", maxUses: 20, ttlSeconds: 7 * 86_400 } as const;

export interface CreateCampaignInput {
  name: string;
  packageId: string;
  target: CampaignTarget;
  channel?: string;
  stages: number[];
  errorThreshold: number;
  maintenanceWindow?: MaintenanceWindow | null;
}

export interface CampaignView {
  id: string;
  name: string;
  packageId: string;
  package: store.CampaignPackageSnapshot;
  target: CampaignTarget;
  channel: string;
  stages: number[];
  errorThreshold: number;
  maintenanceWindow: MaintenanceWindow | null;
  state: store.CampaignRow["state"];
  currentStage: number;
  /** stages[currentStage]: the share of the fleet the rollout includes now. */
  currentPercent: number;
  pauseReason: Record<string, unknown> | null;
  createdBy: string;
  createdAt: number;
  startedAt: number | null;
  updatedAt: number;
  progress: Progress;
}

export interface Assignment {
  campaignId: string;
  packageId: string;
  tufPath: string;
  version: string;
  kind: "full" | "delta";
  fromVersion?: string;
  wrappedContentKey: string;
  installWindow: MaintenanceWindow | null;
}

export interface StatusReport {
  campaignId: string;
  state: ReportedState;
  percent?: number;
  reason?: string;
  installedVersion?: string;
}

export interface DeviceChannelView {
  deviceId: string;
  channel: string;
  groups: string[];
  reportedVersion: string | null;
}

const PAGE = 500;
/** How often the notifier re-reads its campaign, so a pause stops it within this many texts. */
const RECHECK_EVERY = 10;

export class CampaignService {
  private readonly db: Db;

  constructor(
    private readonly platform: Platform,
    private readonly deps: CampaignDeps,
  ) {
    this.db = platform.db as Db;
  }

  private now(): number {
    return this.platform.clock();
  }

  // --- admin ------------------------------------------------------------------------------------

  async create(input: CreateCampaignInput, actor: string): Promise<CampaignView> {
    return this.audited(actor, "campaigns.create", undefined, async () => {
      if (typeof input.name !== "string" || input.name.trim().length === 0 || input.name.length > 100)
        throw new HandsafeError("campaigns.invalid_name", "a campaign name is 1–100 characters");
      const spec = checkCampaignSpec(input);
      const pkg = await this.packageOf(input.packageId);
      const now = this.now();
      const row: store.CampaignRow = {
        id: `cmp_${randomToken(12)}`,
        name: input.name.trim(),
        packageId: pkg.id,
        package: {
          id: pkg.id,
          version: pkg.version,
          kind: pkg.kind,
          ...(pkg.fromVersion ? { fromVersion: pkg.fromVersion } : {}),
          models: [...pkg.models],
          channel: pkg.channel,
          ...(pkg.versionRange ? { versionRange: pkg.versionRange } : {}),
          tufPath: pkg.tufPath,
        },
        target: spec.target,
        channel: spec.channel ?? pkg.channel ?? DEFAULT_CHANNEL,
        stages: spec.stages,
        errorThreshold: spec.errorThreshold,
        maintenanceWindow: spec.maintenanceWindow,
        state: "draft",
        currentStage: 0,
        pauseReason: null,
        createdBy: actor,
        createdAt: now,
        startedAt: null,
        updatedAt: now,
      };
      await store.insertCampaign(this.db, row);
      return { subject: row.id, result: await this.view(row), details: { packageId: pkg.id } };
    });
  }

  async get(id: string): Promise<CampaignView> {
    return this.view(await this.require(id));
  }

  async list(): Promise<CampaignView[]> {
    const rows = await store.listCampaigns(this.db, { limit: 1000 });
    return Promise.all(rows.map((r) => this.view(r)));
  }

  async listDevices(
    id: string,
    page: { state?: DeviceState; after?: string; limit: number },
  ): Promise<store.CampaignDeviceRow[]> {
    await this.require(id);
    return store.listCampaignDevices(this.db, id, page);
  }

  /** draft → running: enrols every matching device, notifies those in stage 0. */
  async start(id: string, actor: string): Promise<CampaignView> {
    return this.audited(actor, "campaigns.start", id, async () => {
      const c = await this.require(id);
      const to = campaignTransition(c.state, "start");
      await this.cas(c, "start", { from: ["draft"], to, toStage: 0, startedAt: this.now() });
      const running = await this.require(id);
      const enrolled = await this.enrolMatching(running);
      const notified = await this.notifyIncluded(running);
      return { result: await this.view(await this.require(id)), details: { enrolled, notified } };
    });
  }

  async pause(id: string, actor: string): Promise<CampaignView> {
    return this.simpleTransition(id, actor, "pause", { reason: "operator" });
  }

  /** paused → running, clearing the pause reason; notifies the current stage's pending devices. */
  async resume(id: string, actor: string): Promise<CampaignView> {
    return this.audited(actor, "campaigns.resume", id, async () => {
      const c = await this.require(id);
      const to = campaignTransition(c.state, "resume");
      await this.cas(c, "resume", { from: ["paused"], to, pauseReason: null });
      const notified = await this.notifyIncluded(await this.require(id));
      return { result: await this.view(await this.require(id)), details: { notified } };
    });
  }

  async abort(id: string, actor: string): Promise<CampaignView> {
    return this.simpleTransition(id, actor, "abort");
  }

  /** The next stage: notifies the devices it newly includes. */
  async advance(id: string, actor: string): Promise<CampaignView> {
    return this.audited(actor, "campaigns.advance", id, async () => {
      const c = await this.require(id);
      campaignTransition(c.state, "advance");
      if (c.currentStage >= c.stages.length - 1)
        throw new HandsafeError("campaigns.last_stage", "the campaign is already at its last stage (100%)", {
          status: 409,
        });
      const toStage = c.currentStage + 1;
      await this.cas(c, "advance", { from: ["running"], to: "running", fromStage: c.currentStage, toStage });
      const notified = await this.notifyIncluded(await this.require(id));
      await this.completeIfDone(await this.require(id));
      return {
        result: await this.view(await this.require(id)),
        details: { stage: toStage, percent: c.stages[toStage]!, notified },
      };
    });
  }

  private async simpleTransition(
    id: string,
    actor: string,
    action: "pause" | "abort",
    pauseReason?: Record<string, unknown>,
  ): Promise<CampaignView> {
    return this.audited(actor, `campaigns.${action}`, id, async () => {
      const c = await this.require(id);
      const to = campaignTransition(c.state, action);
      await this.cas(c, action, {
        from: [c.state],
        to,
        ...(pauseReason ? { pauseReason: { ...pauseReason, by: actor } } : {}),
      });
      return { result: await this.view(await this.require(id)) };
    });
  }

  // --- channels and groups ----------------------------------------------------------------------

  async getDeviceChannel(deviceId: string): Promise<DeviceChannelView> {
    await this.deps.management.getDevice(deviceId);
    const p = (await store.findDeviceChannels(this.db, [deviceId])).get(deviceId);
    return {
      deviceId,
      channel: p?.channel ?? DEFAULT_CHANNEL,
      groups: p?.groups ?? [],
      reportedVersion: p?.reportedVersion ?? null,
    };
  }

  /** Sets a device's release channel and groups; it joins any running campaign it now matches. */
  async setDeviceChannel(
    deviceId: string,
    profile: { channel: string; groups: string[] },
    actor: string,
  ): Promise<DeviceChannelView> {
    return this.audited(
      actor,
      "campaigns.device_channel_set",
      `device:${deviceId}`,
      async () => {
        const channel = checkLabel(profile.channel, "channel");
        const groups = checkGroups(profile.groups);
        await this.deps.management.getDevice(deviceId);
        await store.upsertDeviceChannel(this.db, deviceId, { channel, groups }, this.now());
        const joined = await this.joinCampaigns(deviceId, true);
        return { result: await this.getDeviceChannel(deviceId), details: { channel, groups, joined } };
      },
      true,
    );
  }

  // --- devices ----------------------------------------------------------------------------------

  /**
   * The device's assignment: the oldest running campaign whose current stage includes it and in
   * which it is not final. A device that matches a campaign it is not yet enrolled in joins it
   * first (late joiner). Paused, aborted and completed campaigns assign nothing.
   */
  async assignmentFor(deviceId: string): Promise<Assignment | null> {
    await this.joinCampaigns(deviceId, false);
    for (const { campaign: c, device: d } of await store.enrolmentsOfDevice(this.db, deviceId, ["running"])) {
      if (isFinal(d.state) || !inStage(d.bucket, c.stages, c.currentStage)) continue;
      if (d.state === "pending")
        await store.transitionDevice(
          this.db,
          c.id,
          deviceId,
          "pending",
          { to: "notified", reason: null },
          this.now(),
        );
      const wrappedContentKey = await this.deps.updates.wrapContentKeyFor(deviceId, c.packageId);
      return {
        campaignId: c.id,
        packageId: c.packageId,
        tufPath: c.package.tufPath,
        version: c.package.version,
        kind: c.package.kind,
        ...(c.package.fromVersion ? { fromVersion: c.package.fromVersion } : {}),
        wrappedContentKey,
        installWindow: c.maintenanceWindow,
      };
    }
    return null;
  }

  /**
   * A device's status report. Only its own enrolment (the signature names the device); reports
   * out of order are campaigns.bad_transition. A final report may auto-pause the campaign (error
   * threshold) or complete it.
   */
  async reportStatus(deviceId: string, report: StatusReport): Promise<void> {
    if (report.installedVersion !== undefined && !isVersion(report.installedVersion))
      throw new HandsafeError("campaigns.invalid_report", "installedVersion must be a dotted version");
    if (report.percent !== undefined && report.state !== "downloading")
      throw new HandsafeError("campaigns.invalid_report", "percent goes with state downloading only");
    for (let attempt = 0; ; attempt++) {
      const d = await store.findCampaignDevice(this.db, report.campaignId, deviceId);
      if (!d)
        throw new HandsafeError("campaigns.not_enrolled", "this device is not enrolled in that campaign", {
          status: 404,
        });
      if (d.state === "pending")
        throw new HandsafeError(
          "campaigns.bad_transition",
          "the device has not been assigned this update yet",
          {
            status: 409,
            details: { from: "pending", to: report.state },
          },
        );
      const to = nextDeviceState(d.state, report.state);
      if (to === d.state && to !== "downloading") return;
      const changed = await store.transitionDevice(
        this.db,
        d.campaignId,
        deviceId,
        d.state,
        {
          to,
          percent: to === "downloading" ? (report.percent ?? null) : to === "installed" ? 100 : d.percent,
          ...(report.reason !== undefined ? { reason: report.reason } : {}),
          ...(report.installedVersion !== undefined ? { installedVersion: report.installedVersion } : {}),
        },
        this.now(),
      );
      if (!changed) {
        // Another report moved the row first: judge this one against the new state, once.
        if (attempt === 0) continue;
        throw new HandsafeError(
          "campaigns.bad_transition",
          "a concurrent report changed this device's state",
          {
            status: 409,
          },
        );
      }
      if (to === "installed" && report.installedVersion)
        await store.recordReportedVersion(
          this.db,
          deviceId,
          report.installedVersion,
          DEFAULT_CHANNEL,
          this.now(),
        );
      if (isFinal(to)) await this.afterFinalReport(d.campaignId);
      return;
    }
  }

  /**
   * Housekeeping (every minute, and callable): late joiners enrol in running and paused campaigns;
   * running campaigns notify their current stage's pending devices (new, or a failed send).
   */
  async tick(): Promise<{ enrolled: number; notified: number }> {
    let enrolled = 0;
    let notified = 0;
    for (const c of await store.listCampaigns(this.db, { states: ["running", "paused"] })) {
      enrolled += await this.enrolMatching(c);
      if (c.state === "running") notified += await this.notifyIncluded(c);
      await this.completeIfDone(await this.require(c.id));
    }
    return { enrolled, notified };
  }

  // --- internals --------------------------------------------------------------------------------

  private async require(id: string): Promise<store.CampaignRow> {
    const c = await store.findCampaign(this.db, id);
    if (!c) throw new HandsafeError("campaigns.unknown", `no campaign ${id}`, { status: 404 });
    return c;
  }

  private async packageOf(id: string): Promise<CampaignPackage> {
    let pkg: CampaignPackage | null | undefined;
    try {
      pkg = await this.deps.updates.getPackage(id);
    } catch (e) {
      if (!isHandsafeError(e) || e.status !== 404) throw e;
    }
    if (!pkg) throw new HandsafeError("campaigns.unknown_package", `no package ${id}`, { status: 404 });
    return pkg;
  }

  private async cas(
    c: store.CampaignRow,
    action: CampaignAction,
    change: Parameters<typeof store.transitionCampaign>[2],
  ): Promise<void> {
    if (!(await store.transitionCampaign(this.db, c.id, change, this.now()))) {
      // Someone else changed it in between: report against what it is now.
      const now = await this.require(c.id);
      campaignTransition(now.state, action);
      throw new HandsafeError("campaigns.bad_state", "the campaign changed concurrently; try again", {
        status: 409,
      });
    }
  }

  private async view(c: store.CampaignRow): Promise<CampaignView> {
    return {
      id: c.id,
      name: c.name,
      packageId: c.packageId,
      package: c.package,
      target: c.target,
      channel: c.channel,
      stages: c.stages,
      errorThreshold: c.errorThreshold,
      maintenanceWindow: c.maintenanceWindow,
      state: c.state,
      currentStage: c.currentStage,
      currentPercent: c.stages[c.currentStage] ?? 0,
      pauseReason: c.pauseReason,
      createdBy: c.createdBy,
      createdAt: c.createdAt,
      startedAt: c.startedAt,
      updatedAt: c.updatedAt,
      progress: progressOf(await store.countByState(this.db, c.id)),
    };
  }

  /** Runs an admin action and audits it: allow with its details, or deny with the error's code. */
  private async audited<T>(
    actor: string,
    action: string,
    subject: string | undefined,
    fn: () => Promise<{ result: T; subject?: string; details?: Record<string, unknown> }>,
    rawSubject = false,
  ): Promise<T> {
    const subjectOf = (s: string | undefined) =>
      s === undefined ? undefined : rawSubject ? s : `campaign:${s}`;
    try {
      const out = await fn();
      const s = subjectOf(out.subject ?? subject);
      await this.platform.audit({
        actor,
        action,
        outcome: "allow",
        ...(s ? { subject: s } : {}),
        ...(out.details ? { details: out.details } : {}),
      });
      return out.result;
    } catch (e) {
      const s = subjectOf(subject);
      await this.platform.audit({
        actor,
        action,
        outcome: "deny",
        ...(s ? { subject: s } : {}),
        details: { code: isHandsafeError(e) ? e.code : "internal" },
      });
      throw e;
    }
  }

  private async targetDevices(deviceInfos: Array<{ id: string; model: string; firmwareVersion: string }>) {
    const profiles = await store.findDeviceChannels(
      this.db,
      deviceInfos.map((d) => d.id),
    );
    return deviceInfos.map((d): TargetDevice => {
      const p = profiles.get(d.id);
      return {
        id: d.id,
        model: d.model,
        version: p?.reportedVersion ?? d.firmwareVersion,
        channel: p?.channel ?? DEFAULT_CHANNEL,
        groups: p?.groups ?? [],
      };
    });
  }

  private matching(c: store.CampaignRow, devices: TargetDevice[]) {
    return devices
      .filter((d) => matchesTarget(d, c.target, c.package, c.channel))
      .map((d) => ({ deviceId: d.id, bucket: rolloutBucket(c.id, d.id) }));
  }

  /** Enrols every registered device the campaign matches and has not enrolled yet. */
  private async enrolMatching(c: store.CampaignRow): Promise<number> {
    const now = this.now();
    let added = 0;
    if (c.target.deviceIds?.length) {
      const infos = [];
      for (const id of c.target.deviceIds) {
        try {
          infos.push(await this.deps.management.getDevice(id));
        } catch (e) {
          if (!isHandsafeError(e, "device.unknown")) throw e;
        }
      }
      return (await store.enrolDevices(this.db, c.id, this.matching(c, await this.targetDevices(infos)), now))
        .length;
    }
    const models = c.target.models ?? c.package.models;
    // One listing per model (the registry indexes by model), paged by id.
    for (const model of models) {
      let after: string | undefined;
      for (;;) {
        const page = await this.deps.management.listDevices({
          limit: PAGE,
          model,
          ...(after ? { after } : {}),
        });
        if (page.length === 0) break;
        after = page[page.length - 1]!.id;
        const candidates = this.matching(c, await this.targetDevices(page));
        const known = await store.enrolledAmong(
          this.db,
          c.id,
          candidates.map((x) => x.deviceId),
        );
        added += (
          await store.enrolDevices(
            this.db,
            c.id,
            candidates.filter((x) => !known.has(x.deviceId)),
            now,
          )
        ).length;
        if (page.length < PAGE) break;
      }
    }
    return added;
  }

  /** Late joiner: enrols one device in every running or paused campaign it matches. */
  private async joinCampaigns(deviceId: string, notify: boolean): Promise<number> {
    const campaigns = await store.listCampaigns(this.db, { states: ["running", "paused"] });
    if (campaigns.length === 0) return 0;
    const [device] = await this.targetDevices([await this.deps.management.getDevice(deviceId)]);
    let joined = 0;
    for (const c of campaigns) {
      const m = this.matching(c, [device!]);
      if (m.length === 0) continue;
      const added = await store.enrolDevices(this.db, c.id, m, this.now());
      if (added.length === 0) continue;
      joined++;
      await this.platform.audit({
        actor: "system",
        action: "campaigns.device_joined",
        subject: `campaign:${c.id}`,
        outcome: "info",
        details: { deviceId, bucket: m[0]!.bucket, late: true },
      });
      if (notify && c.state === "running" && inStage(m[0]!.bucket, c.stages, c.currentStage))
        await this.notifyOne(c, deviceId);
    }
    return joined;
  }

  /** Notifies the pending devices the current stage includes, while the campaign keeps running. */
  private async notifyIncluded(c: store.CampaignRow): Promise<number> {
    if (c.state !== "running") return 0;
    const below = c.stages[c.currentStage]!;
    let notified = 0;
    let sinceCheck = 0;
    let after: string | undefined;
    for (;;) {
      const page = await store.listCampaignDevices(this.db, c.id, {
        state: "pending",
        belowBucket: below,
        limit: PAGE,
        ...(after ? { after } : {}),
      });
      if (page.length === 0) return notified;
      for (const d of page) {
        if (++sinceCheck >= RECHECK_EVERY) {
          sinceCheck = 0;
          const fresh = await store.findCampaign(this.db, c.id);
          if (fresh?.state !== "running") return notified;
        }
        if (await this.notifyOne(c, d.deviceId)) notified++;
      }
      after = page[page.length - 1]!.deviceId;
      if (page.length < PAGE) return notified;
    }
  }

  /**
   * Claims the device (pending → notified, compare-and-set: one node, one text) and sends it a
   * dynamic key; a send that fails puts it back to pending with the reason, for the next tick.
   */
  private async notifyOne(c: store.CampaignRow, deviceId: string): Promise<boolean> {
    const now = this.now();
    if (
      !(await store.transitionDevice(
        this.db,
        c.id,
        deviceId,
        "pending",
        { to: "notified", reason: null },
        now,
      ))
    )
      return false;
    try {
      await this.deps.management.issueDynamicKey(deviceId, { ...NOTIFY_POLICY }, `campaign:${c.id}`);
      return true;
    } catch (e) {
      if (!isHandsafeError(e)) throw e;
      await store.transitionDevice(
        this.db,
        c.id,
        deviceId,
        "notified",
        { to: "pending", reason: `notify: ${e.code}` },
        this.now(),
      );
      return false;
    }
  }

  private async afterFinalReport(campaignId: string): Promise<void> {
    const c = await this.require(campaignId);
    if (c.state === "running") {
      const limit = c.stages[c.currentStage]!;
      const verdict = errorThresholdVerdict(await store.countByState(this.db, c.id, limit), c.errorThreshold);
      if (verdict.exceeded) {
        const reason = {
          reason: "error_threshold",
          by: "system",
          stage: c.currentStage,
          failed: verdict.failed,
          final: verdict.final,
          // Per mille as an integer: the audit log's canonical JSON takes safe integers only.
          ratePerMille: Math.round(verdict.rate * 1000),
          thresholdPerMille: Math.round(c.errorThreshold * 1000),
        };
        if (
          await store.transitionCampaign(
            this.db,
            c.id,
            { from: ["running"], to: "paused", pauseReason: reason },
            this.now(),
          )
        )
          await this.platform.audit({
            actor: "system",
            action: "campaigns.auto_paused",
            subject: `campaign:${c.id}`,
            outcome: "info",
            details: reason,
          });
      }
    }
    await this.completeIfDone(c);
  }

  /**
   * At the last stage with every enrolled device final: completed. Checked after each final report,
   * after an advance (every device may have finished before the last stage began: nobody is left to
   * report) and on the tick.
   */
  private async completeIfDone(c: store.CampaignRow): Promise<void> {
    if (c.currentStage !== c.stages.length - 1) return;
    if (c.state !== "running" && c.state !== "paused") return;
    const counts = await store.countByState(this.db, c.id);
    const { total, byState } = progressOf(counts);
    const open = total - byState.installed - byState.failed - byState.rolled_back;
    if (total > 0 && open === 0) {
      if (
        await store.transitionCampaign(
          this.db,
          c.id,
          { from: ["running", "paused"], to: "completed" },
          this.now(),
        )
      )
        await this.platform.audit({
          actor: "system",
          action: "campaigns.completed",
          subject: `campaign:${c.id}`,
          outcome: "info",
          details: { installed: byState.installed, failed: byState.failed, rolledBack: byState.rolled_back },
        });
    }
  }
}
