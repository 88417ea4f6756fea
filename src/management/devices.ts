/** The registered devices as the admin API shows them: looked up by id or listed by page. */
import type { Kysely } from "kysely";
import { HandsafeError } from "../core/errors.ts";
import * as store from "./store.ts";

type Db = Kysely<store.ManagementTables>;

export interface DeviceInfo {
  id: string;
  model: string;
  hardwareId: string;
  hardwareIdKind: string;
  firmwareVersion: string;
  memoryLayout: Record<string, unknown>;
  msisdn: string | null;
  owner: string | null;
  keySource: string;
  batchId: string;
  handsetId: string | null;
  createdAt: number;
}

export async function requireDevice(db: Db, id: string): Promise<store.DeviceRow> {
  const d = await store.findDevice(db, id);
  if (!d) throw new HandsafeError("device.unknown", `no device ${id}`, { status: 404 });
  return d;
}

export async function getDevice(db: Db, id: string): Promise<DeviceInfo> {
  return deviceInfo(await requireDevice(db, id));
}

export async function listDevices(
  db: Db,
  page: { after?: string; limit: number; model?: string },
): Promise<DeviceInfo[]> {
  return (await store.listDevices(db, page)).map(deviceInfo);
}

function deviceInfo(d: store.DeviceRow): DeviceInfo {
  return {
    id: d.id,
    model: d.model,
    hardwareId: d.hardwareId,
    hardwareIdKind: d.hardwareIdKind,
    firmwareVersion: d.firmwareVersion,
    memoryLayout: JSON.parse(d.memoryLayout) as Record<string, unknown>,
    msisdn: d.msisdn,
    owner: d.owner,
    keySource: d.keySource,
    batchId: d.batchId,
    handsetId: d.handsetId,
    createdAt: d.createdAt,
  };
}
