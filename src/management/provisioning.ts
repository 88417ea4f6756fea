/**
 * Provisioning: a manufacturer's batch (CSV or JSON, parsed by batch.ts) imported as registered
 * devices, each with its static key sealed at rest and its handset-side key file handed back once.
 */
import type { Kysely } from "kysely";
import { randomBytes, randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { Platform } from "../platform/context.ts";
import type { DeviceKeys } from "./device-keys.ts";
import {
  type DeviceKeyFile,
  type DeviceRecordInput,
  makeKeyFile,
  newDeviceId,
  parseProvisioningBatch,
  STATIC_KEY_BYTES,
} from "./protocol.ts";
import * as store from "./store.ts";

type Db = Kysely<store.ManagementTables>;

export type BatchRowResult =
  | { line: number; status: "accepted"; deviceId: string; hardwareId: string }
  | { line: number; status: "rejected"; code: string; message: string };

export interface BatchImportResult {
  batchId: string;
  accepted: number;
  rejected: number;
  rows: BatchRowResult[];
  /** The handset-side key files of the accepted rows — shown once, never stored in clear. */
  keyFiles: DeviceKeyFile[];
}

export class Provisioning {
  private readonly db: Db;

  constructor(
    private readonly platform: Platform,
    private readonly keys: DeviceKeys,
    /** Written into the handset key files so a device knows where (and which key) to trust. */
    private readonly server: { url: string; pin?: string } | undefined,
  ) {
    this.db = platform.db;
  }

  async importBatch(input: string, format: "csv" | "json", actor: string): Promise<BatchImportResult> {
    let parsed: ReturnType<typeof parseProvisioningBatch>;
    try {
      parsed = parseProvisioningBatch(input, format);
    } catch (e) {
      await this.platform.audit({
        actor,
        action: "management.batch_import",
        outcome: "deny",
        details: { code: e instanceof HandsafeError ? e.code : "internal", format },
      });
      throw e;
    }
    const now = this.platform.clock();
    const batchId = `bat_${randomToken(12)}`;
    const rows: BatchRowResult[] = parsed.errors.map((e) => ({ ...e, status: "rejected" as const }));
    const taken = await store.existingHardwareIds(
      this.db,
      parsed.accepted.map((r) => r.hardwareId),
    );
    const fresh: Array<{ record: DeviceRecordInput; row: store.DeviceRow; key: Uint8Array }> = [];
    for (const record of parsed.accepted) {
      if (taken.has(record.hardwareId)) {
        rows.push(duplicate(record));
        continue;
      }
      const id = newDeviceId();
      const key = record.staticKey ?? randomBytes(STATIC_KEY_BYTES);
      fresh.push({
        record,
        key,
        row: {
          id,
          model: record.model,
          hardwareId: record.hardwareId,
          hardwareIdKind: record.hardwareIdKind,
          firmwareVersion: record.firmwareVersion,
          memoryLayout: record.memoryLayout,
          msisdn: record.msisdn,
          owner: record.owner,
          sealedStaticKey: this.keys.sealStaticKey(id, key),
          keySource: record.keySource,
          batchId,
          handsetId: null,
          createdAt: now,
        },
      });
    }
    const inserted = await store.insertDevices(
      this.db,
      fresh.map((f) => f.row),
    );
    const keyFiles: DeviceKeyFile[] = [];
    for (const f of fresh) {
      if (!inserted.has(f.row.id)) {
        rows.push(duplicate(f.record));
      } else {
        rows.push({
          line: f.record.line,
          status: "accepted",
          deviceId: f.row.id,
          hardwareId: f.row.hardwareId,
        });
        keyFiles.push(
          makeKeyFile({
            deviceId: f.row.id,
            hardwareId: f.row.hardwareId,
            model: f.row.model,
            staticKey: f.key,
            keySource: f.row.keySource,
            ...(this.server?.url ? { serverUrl: this.server.url } : {}),
            ...(this.server?.pin ? { serverPin: this.server.pin } : {}),
          }),
        );
      }
      f.key.fill(0);
    }
    rows.sort((a, b) => a.line - b.line);
    const accepted = keyFiles.length;
    await store.insertBatch(this.db, {
      id: batchId,
      format,
      accepted,
      rejected: rows.length - accepted,
      createdBy: actor,
      createdAt: now,
    });
    await this.platform.audit({
      actor,
      action: "management.batch_import",
      subject: `batch:${batchId}`,
      outcome: "allow",
      details: { format, accepted, rejected: rows.length - accepted },
    });
    return { batchId, accepted, rejected: rows.length - accepted, rows, keyFiles };
  }
}

function duplicate(record: DeviceRecordInput): BatchRowResult {
  return {
    line: record.line,
    status: "rejected",
    code: "provisioning.duplicate_device",
    message: `hardware_id ${record.hardwareId} is already registered`,
  };
}
