/**
 * Commands a service sends to an activated handset ("sync contacts"), authenticated with the
 * per-service key that activation agreed; the handset pulls them proving it holds that key.
 */
import type { Kysely } from "kysely";
import { fromBase64url } from "../core/codec/base64url.ts";
import { randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { Platform } from "../platform/context.ts";
import { isUniqueViolation } from "../platform/db/database.ts";
import {
  type CommandArgs,
  PULL_WINDOW_MS,
  type SealedCommand,
  sealCommand,
  verifyPullAuth,
} from "./protocol.ts";
import type { ActivationService } from "./server.ts";
import * as store from "./store.ts";

export class CommandService {
  private readonly db: Kysely<store.ActivationTables>;

  constructor(
    private readonly platform: Platform,
    private readonly services: ActivationService,
  ) {
    this.db = platform.db;
  }

  private async activeKey(
    service: store.ServiceRow,
    handsetId: string,
  ): Promise<{ row: store.ServiceKeyRow; key: Uint8Array }> {
    const row = await store.findActiveServiceKey(this.db, service.id, handsetId);
    if (!row)
      throw new HandsafeError("activation.not_active", `${service.uid} is not active on this handset`, {
        status: 404,
      });
    return { row, key: this.platform.keyring.openAtRest(row.sealedKey, `activation/service-key/${row.id}`) };
  }

  async sendCommand(
    input: { serviceUid: string; handsetId: string; name: string; args: CommandArgs },
    actor: string,
  ): Promise<{ commandId: string; seq: number }> {
    const service = await this.services.requireService(input.serviceUid);
    const { row, key } = await this.activeKey(service, input.handsetId);
    const now = this.platform.clock();
    try {
      return await this.insertSealed(service, row.id, key, input, now, actor);
    } finally {
      key.fill(0);
    }
  }

  private async insertSealed(
    service: store.ServiceRow,
    serviceKeyId: string,
    key: Uint8Array,
    input: { handsetId: string; name: string; args: CommandArgs },
    now: number,
    actor: string,
  ): Promise<{ commandId: string; seq: number }> {
    for (let attempt = 0; ; attempt++) {
      const seq = await store.nextCommandSeq(this.db, service.id, input.handsetId);
      const commandId = `cmd_${randomToken(12)}`;
      const sealed = sealCommand(key, {
        v: 1,
        commandId,
        serviceUid: service.uid,
        handsetId: input.handsetId,
        name: input.name,
        args: input.args,
        seq,
        issuedAt: now,
      });
      try {
        await store.insertCommand(this.db, {
          id: commandId,
          serviceId: service.id,
          handsetId: input.handsetId,
          serviceKeyId,
          seq,
          body: JSON.stringify(sealed),
          createdAt: now,
        });
      } catch (e) {
        if (isUniqueViolation(e) && attempt < 5) continue; // another sender took this seq: take the next
        throw e;
      }
      await this.platform.audit({
        actor,
        action: "activation.command_sent",
        subject: `${service.uid}/${input.handsetId}`,
        outcome: "allow",
        details: { commandId, name: input.name, seq },
      });
      return { commandId, seq };
    }
  }

  /** The handset pulls its commands, proving with the service key that it is the handset. */
  async pullCommands(input: {
    serviceUid: string;
    handsetId: string;
    afterSeq: number;
    timestamp: number;
    proof: string;
  }): Promise<SealedCommand[]> {
    const service = await this.services.requireService(input.serviceUid);
    // The time window first, for everyone alike; then no active key answers like a bad proof: this unauthenticated endpoint must not tell a
    // stranger which services a handset has.
    if (Math.abs(this.platform.clock() - input.timestamp) > PULL_WINDOW_MS) {
      const e = new HandsafeError("command.stale_proof", "the pull proof is too old or from the future", {
        status: 401,
      });
      await this.services.deny("activation.pull_refused", input.serviceUid, e);
      throw e;
    }
    const active = await this.activeKey(service, input.handsetId).catch(() => undefined);
    if (!active) {
      const e = new HandsafeError("command.bad_proof", "the pull proof does not verify", { status: 401 });
      await this.services.deny("activation.pull_refused", input.serviceUid, e);
      throw e;
    }
    const { row, key } = active;
    try {
      verifyPullAuth(key, {
        serviceUid: service.uid,
        handsetId: input.handsetId,
        afterSeq: input.afterSeq,
        timestamp: input.timestamp,
        proof: fromBase64url(input.proof, "proof"),
        now: this.platform.clock(),
      });
    } catch (e) {
      await this.services.deny("activation.pull_refused", input.serviceUid, e);
      throw e;
    } finally {
      key.fill(0);
    }
    // Only commands sealed under the key the handset holds now: after a re-activation, those
    // under the revoked key are of no use to it.
    const bodies = await store.listCommandsAfter(this.db, row.id, input.afterSeq);
    return bodies.map((b) => JSON.parse(b) as SealedCommand);
  }
}
