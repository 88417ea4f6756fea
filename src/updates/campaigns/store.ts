/**
 * Campaigns' tables and queries (migration 0009_campaigns, ./migrations.ts). Every state change is
 * a compare-and-set on the row's current state, so several server nodes can share one fleet.
 */
import { type Kysely, sql } from "kysely";
import type {
  CampaignState,
  CampaignTarget,
  DeviceState,
  MaintenanceWindow,
  StateCounts,
  TargetPackage,
} from "./protocol.ts";
import { DEVICE_STATES, emptyCounts } from "./protocol.ts";

export interface CampaignTables {
  campaigns: {
    id: string;
    name: string;
    package_id: string;
    package: string;
    target: string;
    channel: string;
    stages: string;
    error_threshold: number;
    maintenance_window: string | null;
    state: string;
    current_stage: number;
    pause_reason: string | null;
    created_by: string;
    created_at: number;
    started_at: number | null;
    updated_at: number;
  };
  campaign_devices: {
    campaign_id: string;
    device_id: string;
    bucket: number;
    state: string;
    percent: number | null;
    reason: string | null;
    installed_version: string | null;
    enrolled_at: number;
    updated_at: number;
  };
  device_channels: {
    device_id: string;
    channel: string;
    groups: string;
    reported_version: string | null;
    updated_at: number;
  };
}

type Db = Kysely<CampaignTables>;

/** The package snapshot kept with a campaign: targeting facts plus what an assignment carries. */
export interface CampaignPackageSnapshot extends TargetPackage {
  tufPath: string;
}

export interface CampaignRow {
  id: string;
  name: string;
  packageId: string;
  package: CampaignPackageSnapshot;
  target: CampaignTarget;
  channel: string;
  stages: number[];
  errorThreshold: number;
  maintenanceWindow: MaintenanceWindow | null;
  state: CampaignState;
  currentStage: number;
  pauseReason: Record<string, unknown> | null;
  createdBy: string;
  createdAt: number;
  startedAt: number | null;
  updatedAt: number;
}

function toCampaign(r: CampaignTables["campaigns"]): CampaignRow {
  return {
    id: r.id,
    name: r.name,
    packageId: r.package_id,
    package: JSON.parse(r.package) as CampaignPackageSnapshot,
    target: JSON.parse(r.target) as CampaignTarget,
    channel: r.channel,
    stages: JSON.parse(r.stages) as number[],
    errorThreshold: Number(r.error_threshold),
    maintenanceWindow: r.maintenance_window ? (JSON.parse(r.maintenance_window) as MaintenanceWindow) : null,
    state: r.state as CampaignState,
    currentStage: Number(r.current_stage),
    pauseReason: r.pause_reason ? (JSON.parse(r.pause_reason) as Record<string, unknown>) : null,
    createdBy: r.created_by,
    createdAt: Number(r.created_at),
    startedAt: r.started_at === null ? null : Number(r.started_at),
    updatedAt: Number(r.updated_at),
  };
}

export async function insertCampaign(db: Db, c: CampaignRow): Promise<void> {
  await db
    .insertInto("campaigns")
    .values({
      id: c.id,
      name: c.name,
      package_id: c.packageId,
      package: JSON.stringify(c.package),
      target: JSON.stringify(c.target),
      channel: c.channel,
      stages: JSON.stringify(c.stages),
      error_threshold: c.errorThreshold,
      maintenance_window: c.maintenanceWindow ? JSON.stringify(c.maintenanceWindow) : null,
      state: c.state,
      current_stage: c.currentStage,
      pause_reason: c.pauseReason ? JSON.stringify(c.pauseReason) : null,
      created_by: c.createdBy,
      created_at: c.createdAt,
      started_at: c.startedAt,
      updated_at: c.updatedAt,
    })
    .execute();
}

export async function findCampaign(db: Db, id: string): Promise<CampaignRow | undefined> {
  const r = await db.selectFrom("campaigns").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toCampaign(r) : undefined;
}

export async function listCampaigns(
  db: Db,
  filter: { states?: CampaignState[]; limit?: number } = {},
): Promise<CampaignRow[]> {
  let q = db.selectFrom("campaigns").selectAll().orderBy("created_at").orderBy("id");
  if (filter.states) q = q.where("state", "in", filter.states);
  if (filter.limit) q = q.limit(filter.limit);
  return (await q.execute()).map(toCampaign);
}

/**
 * Compare-and-set of a campaign's state (and optionally its stage): changes the row only when it
 * is still in `from` (and at `fromStage`); returns whether this caller made the change.
 */
export async function transitionCampaign(
  db: Db,
  id: string,
  change: {
    from: CampaignState[];
    to: CampaignState;
    fromStage?: number;
    toStage?: number;
    pauseReason?: Record<string, unknown> | null;
    startedAt?: number;
  },
  now: number,
): Promise<boolean> {
  let q = db
    .updateTable("campaigns")
    .set({
      state: change.to,
      updated_at: now,
      ...(change.toStage !== undefined ? { current_stage: change.toStage } : {}),
      ...(change.pauseReason !== undefined
        ? { pause_reason: change.pauseReason ? JSON.stringify(change.pauseReason) : null }
        : {}),
      ...(change.startedAt !== undefined ? { started_at: change.startedAt } : {}),
    })
    .where("id", "=", id)
    .where("state", "in", change.from);
  if (change.fromStage !== undefined) q = q.where("current_stage", "=", change.fromStage);
  const r = await q.executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

// --- enrolled devices -----------------------------------------------------------------------------

export interface CampaignDeviceRow {
  campaignId: string;
  deviceId: string;
  bucket: number;
  state: DeviceState;
  percent: number | null;
  reason: string | null;
  installedVersion: string | null;
  enrolledAt: number;
  updatedAt: number;
}

function toCampaignDevice(r: CampaignTables["campaign_devices"]): CampaignDeviceRow {
  return {
    campaignId: r.campaign_id,
    deviceId: r.device_id,
    bucket: Number(r.bucket),
    state: r.state as DeviceState,
    percent: r.percent === null ? null : Number(r.percent),
    reason: r.reason,
    installedVersion: r.installed_version,
    enrolledAt: Number(r.enrolled_at),
    updatedAt: Number(r.updated_at),
  };
}

/** Enrols devices as pending; a device already enrolled is left as it is. Returns those added. */
export async function enrolDevices(
  db: Db,
  campaignId: string,
  devices: Array<{ deviceId: string; bucket: number }>,
  now: number,
): Promise<string[]> {
  const added: string[] = [];
  for (let i = 0; i < devices.length; i += 200) {
    const chunk = devices.slice(i, i + 200);
    if (chunk.length === 0) continue;
    const rows = await db
      .insertInto("campaign_devices")
      .values(
        chunk.map((d) => ({
          campaign_id: campaignId,
          device_id: d.deviceId,
          bucket: d.bucket,
          state: "pending",
          percent: null,
          reason: null,
          installed_version: null,
          enrolled_at: now,
          updated_at: now,
        })),
      )
      .onConflict((oc) => oc.columns(["campaign_id", "device_id"]).doNothing())
      .returning("device_id")
      .execute();
    for (const r of rows) added.push(r.device_id);
  }
  return added;
}

export async function findCampaignDevice(
  db: Db,
  campaignId: string,
  deviceId: string,
): Promise<CampaignDeviceRow | undefined> {
  const r = await db
    .selectFrom("campaign_devices")
    .selectAll()
    .where("campaign_id", "=", campaignId)
    .where("device_id", "=", deviceId)
    .executeTakeFirst();
  return r ? toCampaignDevice(r) : undefined;
}

/** The device ids of a campaign already enrolled, among `deviceIds`. */
export async function enrolledAmong(db: Db, campaignId: string, deviceIds: string[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (let i = 0; i < deviceIds.length; i += 500) {
    const chunk = deviceIds.slice(i, i + 500);
    if (chunk.length === 0) continue;
    const rows = await db
      .selectFrom("campaign_devices")
      .select("device_id")
      .where("campaign_id", "=", campaignId)
      .where("device_id", "in", chunk)
      .execute();
    for (const r of rows) out.add(r.device_id);
  }
  return out;
}

export async function listCampaignDevices(
  db: Db,
  campaignId: string,
  page: { state?: DeviceState; belowBucket?: number; after?: string; limit: number },
): Promise<CampaignDeviceRow[]> {
  let q = db
    .selectFrom("campaign_devices")
    .selectAll()
    .where("campaign_id", "=", campaignId)
    .orderBy("device_id")
    .limit(page.limit);
  if (page.state) q = q.where("state", "=", page.state);
  if (page.belowBucket !== undefined) q = q.where("bucket", "<", page.belowBucket);
  if (page.after) q = q.where("device_id", ">", page.after);
  return (await q.execute()).map(toCampaignDevice);
}

/** The enrolments of one device in campaigns of the given states, oldest campaign first. */
export async function enrolmentsOfDevice(
  db: Db,
  deviceId: string,
  states: CampaignState[],
): Promise<Array<{ campaign: CampaignRow; device: CampaignDeviceRow }>> {
  const rows = await db
    .selectFrom("campaign_devices")
    .innerJoin("campaigns", "campaigns.id", "campaign_devices.campaign_id")
    .selectAll("campaign_devices")
    .select("campaigns.id as c_id")
    .where("campaign_devices.device_id", "=", deviceId)
    .where("campaigns.state", "in", states)
    .orderBy("campaigns.started_at")
    .orderBy("campaigns.id")
    .execute();
  const out: Array<{ campaign: CampaignRow; device: CampaignDeviceRow }> = [];
  for (const r of rows) {
    const campaign = await findCampaign(db, r.c_id);
    if (campaign) out.push({ campaign, device: toCampaignDevice(r) });
  }
  return out;
}

/**
 * Compare-and-set of one device's state: only from `from`. Returns whether this caller made the
 * change (a concurrent report or notifier that got there first makes it false).
 */
export async function transitionDevice(
  db: Db,
  campaignId: string,
  deviceId: string,
  from: DeviceState,
  change: {
    to: DeviceState;
    percent?: number | null;
    reason?: string | null;
    installedVersion?: string | null;
  },
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("campaign_devices")
    .set({
      state: change.to,
      updated_at: now,
      ...(change.percent !== undefined ? { percent: change.percent } : {}),
      ...(change.reason !== undefined ? { reason: change.reason } : {}),
      ...(change.installedVersion !== undefined ? { installed_version: change.installedVersion } : {}),
    })
    .where("campaign_id", "=", campaignId)
    .where("device_id", "=", deviceId)
    .where("state", "=", from)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Counts by state; with `belowBucket`, only the devices a stage includes. */
export async function countByState(db: Db, campaignId: string, belowBucket?: number): Promise<StateCounts> {
  let q = db
    .selectFrom("campaign_devices")
    .select(["state", sql<number>`count(*)`.as("n")])
    .where("campaign_id", "=", campaignId)
    .groupBy("state");
  if (belowBucket !== undefined) q = q.where("bucket", "<", belowBucket);
  const counts = emptyCounts();
  for (const r of await q.execute())
    if ((DEVICE_STATES as readonly string[]).includes(r.state)) counts[r.state as DeviceState] = Number(r.n);
  return counts;
}

// --- release channels and groups ------------------------------------------------------------------

export interface DeviceChannelRow {
  deviceId: string;
  channel: string;
  groups: string[];
  reportedVersion: string | null;
  updatedAt: number;
}

export async function findDeviceChannels(
  db: Db,
  deviceIds: string[],
): Promise<Map<string, DeviceChannelRow>> {
  const out = new Map<string, DeviceChannelRow>();
  for (let i = 0; i < deviceIds.length; i += 500) {
    const chunk = deviceIds.slice(i, i + 500);
    if (chunk.length === 0) continue;
    const rows = await db.selectFrom("device_channels").selectAll().where("device_id", "in", chunk).execute();
    for (const r of rows)
      out.set(r.device_id, {
        deviceId: r.device_id,
        channel: r.channel,
        groups: JSON.parse(r.groups) as string[],
        reportedVersion: r.reported_version,
        updatedAt: Number(r.updated_at),
      });
  }
  return out;
}

/** Sets a device's channel and groups, keeping its reported version. */
export async function upsertDeviceChannel(
  db: Db,
  deviceId: string,
  profile: { channel: string; groups: string[] },
  now: number,
): Promise<void> {
  await db
    .insertInto("device_channels")
    .values({
      device_id: deviceId,
      channel: profile.channel,
      groups: JSON.stringify(profile.groups),
      reported_version: null,
      updated_at: now,
    })
    .onConflict((oc) =>
      oc.column("device_id").doUpdateSet({
        channel: profile.channel,
        groups: JSON.stringify(profile.groups),
        updated_at: now,
      }),
    )
    .execute();
}

/** Records the version a device reported installed (its channel stays as it was, default stable). */
export async function recordReportedVersion(
  db: Db,
  deviceId: string,
  version: string,
  defaultChannel: string,
  now: number,
): Promise<void> {
  await db
    .insertInto("device_channels")
    .values({
      device_id: deviceId,
      channel: defaultChannel,
      groups: "[]",
      reported_version: version,
      updated_at: now,
    })
    .onConflict((oc) => oc.column("device_id").doUpdateSet({ reported_version: version, updated_at: now }))
    .execute();
}
