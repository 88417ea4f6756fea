/**
 * The secure zone simulator (docs/protocols/trustzone.md §6): a TEE split into containers, reachable
 * only through this class, which enforces every limit itself. Node-free (MemoryKeystore in a browser,
 * FolderKeystore on Node); it imports the pure protocol modules only, never the zone server.
 *
 * What it keeps at rest, and how it is sealed, is secure-zone-store.ts; its event log (security
 * events apart from refusal counters) is secure-zone-log.ts.
 */

import { fromBase64url } from "../core/codec/base64url.ts";
import { hmacSha256 } from "../core/crypto/hash.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import {
  checkPackageName,
  deriveUserKey,
  deriveZoneAdminKey,
  deriveZoneRequestKey,
  generateSubKeyMaterial,
  keyMatchesCheck,
  parseRelayCommand,
  RELAY_MAX_AGE_MS,
  type RelayCommand,
  sealSubKeyForManager,
  verifyRelayProof,
  verifySignal,
  verifyToken,
  type ZoneSignal,
} from "../trustzone/protocol.ts";
import type { Keystore } from "./keystore.ts";
import {
  bindRecord,
  checkPackageFits,
  containerView,
  decodePackage,
  freeRecord,
  type KeyedPlanStep,
  personalisationOf,
  planKeyed,
  usableContainer,
  zoneError,
} from "./secure-zone-containers.ts";
import {
  countRefusal,
  emptyRefusals,
  logSecurityEvent,
  type ZoneEvent,
  type ZoneEventType,
  type ZoneRefusals,
} from "./secure-zone-log.ts";
import {
  type ContainerRecord,
  type Personalisation,
  SealedZoneStore,
  type ZoneRecord,
} from "./secure-zone-store.ts";
import type {
  ContainerHandle,
  ContainerView,
  RelayResult,
  SubKeyResult,
  ZoneBundle,
} from "./secure-zone-types.ts";

export { MAX_CONTAINER_BYTES, MAX_PACKAGE_BYTES, MAX_PACKAGES_PER_CONTAINER } from "../trustzone/protocol.ts";
export { FREE_CONTAINER_ATTEMPTS } from "./secure-zone-containers.ts";
export {
  MAX_SECURITY_EVENTS,
  type ZoneEvent,
  type ZoneEventType,
  type ZoneRefusalCount,
  type ZoneRefusalKind,
  type ZoneRefusals,
} from "./secure-zone-log.ts";
export type { ContainerState } from "./secure-zone-store.ts";
export type {
  ContainerHandle,
  ContainerView,
  RelayResult,
  SubKeyResult,
  ZoneBundle,
} from "./secure-zone-types.ts";

export const DEFAULT_CONTAINERS = 16;

interface Keys {
  uk: Uint8Array;
  zak: Uint8Array;
  zrk: Uint8Array;
  trustZonePublicKeys: Record<string, Uint8Array>;
}

export class SecureZone {
  readonly #store: SealedZoneStore;
  readonly #now: () => number;
  #record: ZoneRecord;
  #keys: Keys | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  /** Relay command ids seen within RELAY_MAX_AGE_MS (in memory: a restart forgets them). */
  readonly #seenRelays = new Map<string, number>();

  private constructor(store: SealedZoneStore, record: ZoneRecord, now: () => number) {
    this.#store = store;
    this.#record = record;
    this.#now = now;
    this.#loadKeys();
  }

  /** Opens (or creates) the zone kept in `keystore`. The HUK is generated on the first open. */
  static async open(
    keystore: Keystore,
    options: { containers?: number; now?: () => number } = {},
  ): Promise<SecureZone> {
    const { store, record: saved } = await SealedZoneStore.open(keystore);
    let record: ZoneRecord;
    if (saved === undefined) {
      const count = options.containers ?? DEFAULT_CONTAINERS;
      if (!Number.isInteger(count) || count < 1 || count > 1024)
        throw new HandsafeError("zone.invalid_options", "containers must be 1..1024");
      record = {
        version: 1,
        containerCount: count,
        minEpoch: 1,
        personalisation: null,
        containers: Array.from({ length: count }, (_, i) => freeRecord(i, null, 0)),
        events: [],
        eventSeq: 0,
        refusals: emptyRefusals(),
      };
    } else record = saved;
    const zone = new SecureZone(store, record, options.now ?? Date.now);
    if (saved === undefined) await zone.#save();
    return zone;
  }

  get personalised(): boolean {
    return this.#record.personalisation !== null;
  }

  get zoneId(): string | undefined {
    return this.#record.personalisation?.zoneId;
  }

  get epoch(): number | undefined {
    return this.#record.personalisation?.epoch;
  }

  /** The last signal seq applied (0 before any): the server sends only what comes after. */
  get lastSeq(): number {
    return this.#record.personalisation?.lastSeq ?? 0;
  }

  get containerCount(): number {
    return this.#record.containerCount;
  }

  /** Provisions ZMK, user info and epoch; every container starts free under FK_i. */
  personalise(bundle: ZoneBundle): Promise<void> {
    return this.#exclusive(async () => {
      if (this.#record.personalisation !== null)
        throw zoneError("zone.already_personalised", "zone is personalised: factory-reset it first", 409);
      this.#record.personalisation = personalisationOf(bundle, this.#record.minEpoch);
      this.#loadKeys();
      const uk = this.#requireKeys().uk;
      this.#record.containers = this.#record.containers.map((c) => freeRecord(c.index, uk, c.generation + 1));
      this.#event("personalised", undefined, `epoch ${bundle.epoch}`);
      await this.#save();
    });
  }

  /** Applies a server signal (MAC'd with ZAK); refuses bad MAC, other zone/epoch, replayed seq. */
  applySignal(
    signal: ZoneSignal,
    mac: Uint8Array | string,
  ): Promise<{ type: ZoneSignal["type"]; containers: number[] }> {
    return this.#exclusive(async () => {
      const p = this.#requirePersonalised();
      const keys = this.#requireKeys();
      let s: ZoneSignal;
      let plan: KeyedPlanStep[] = [];
      try {
        s = verifySignal(keys.zak, signal, mac, { zoneId: p.zoneId, epoch: p.epoch, lastSeq: p.lastSeq });
        for (const i of s.containers) this.#container(i, "zone.signal_invalid");
        if (s.type === "bind" || s.type === "renew")
          plan = planKeyed(this.#record.containers, s, keys.zak, p);
      } catch (e) {
        if (isHandsafeError(e, "zone.signal_invalid")) {
          countRefusal(this.#record, "signal", this.#now(), e.message);
          await this.#save();
        }
        throw e;
      }
      if (s.type === "unbind" || s.type === "reclaim") for (const i of s.containers) await this.#free(i);
      else await this.#applyKeyed(s, plan);
      p.lastSeq = s.seq;
      this.#event("signal_applied", undefined, `${s.type} seq ${s.seq} [${s.containers.join(",")}]`);
      await this.#save();
      return { type: s.type, containers: [...s.containers] };
    });
  }

  /**
   * Handset placement (§4): verifies the token against the pinned keys, checks its claims, derives SK,
   * binds the token's containers (CK_i stored, FK_i gone) and returns SK sealed to the manager.
   */
  generateSubKey(tokenJws: string, managerPublicKey: Uint8Array): Promise<SubKeyResult> {
    return this.#exclusive(async () => {
      const p = this.#requirePersonalised();
      const keys = this.#requireKeys();
      const now = this.#now();
      const claims = verifyToken(tokenJws, keys.trustZonePublicKeys, { now, zoneId: p.zoneId });
      for (const i of claims.containers) {
        const c = this.#container(i, "token.containers_taken");
        if (c.state !== "free") throw zoneError("token.containers_taken", `container ${i} is not free`, 409);
      }
      const material = generateSubKeyMaterial(keys.uk, tokenJws, claims.containers);
      const sealedSubKey = sealSubKeyForManager(material.sk, managerPublicKey, claims.jti);
      material.sk.fill(0);
      const notAfter = now + claims.limits.containerSeconds * 1000;
      for (const { index, ck } of material.containers) {
        await this.#wipePackages(index);
        bindRecord(
          this.#record.containers[index]!,
          ck,
          claims.sub,
          claims.jti,
          notAfter,
          claims.limits.maxAttempts,
        );
      }
      this.#event(
        "subkey_generated",
        undefined,
        `${claims.jti} for ${claims.sub} [${claims.containers.join(",")}]`,
      );
      await this.#save();
      return {
        jti: claims.jti,
        managerId: claims.sub,
        sealedSubKey,
        containers: material.containers.map(({ index, keyCheck }) => ({ index, keyCheck })),
        notAfter,
        maxAttempts: claims.limits.maxAttempts,
      };
    });
  }

  /** Opens container i with CK_i (bound) or FK_i (free). A wrong key spends an attempt; at zero it locks. */
  openContainer(index: number, key: Uint8Array): Promise<ContainerHandle> {
    return this.#exclusive(async () => this.#openWith(index, key, false));
  }

  /** The master's way in: FK_i opens a free container, and nothing else (bound ones refuse it). */
  masterOpenFree(index: number, fk: Uint8Array): Promise<ContainerHandle> {
    return this.#exclusive(async () => this.#openWith(index, fk, true));
  }

  /** A server-relayed put/get/delete/list, authorised by proof = HMAC(CK_i, relay ‖ 0 ‖ command). */
  relay(command: RelayCommand, proof: Uint8Array | string): Promise<RelayResult> {
    return this.#exclusive(async () => {
      const p = this.#requirePersonalised();
      const now = this.#now();
      let cmd: RelayCommand;
      try {
        cmd = parseRelayCommand(command);
        if (cmd.zoneId !== p.zoneId || cmd.epoch !== p.epoch)
          throw zoneError("zone.relay_invalid", "command is for another zone or epoch", 400);
        if (Math.abs(now - cmd.created) > RELAY_MAX_AGE_MS)
          throw zoneError("zone.relay_invalid", "command is stale", 400);
        for (const [id, at] of this.#seenRelays)
          if (Math.abs(now - at) > RELAY_MAX_AGE_MS) this.#seenRelays.delete(id);
        if (this.#seenRelays.has(cmd.id)) throw zoneError("zone.relay_invalid", "command replayed", 400);
      } catch (e) {
        if (isHandsafeError(e, "zone.relay_invalid")) {
          countRefusal(this.#record, "relay", this.#now(), e.message);
          await this.#save();
        }
        throw e;
      }
      const c = usableContainer(this.#container(cmd.container, "zone.relay_invalid"), now);
      if (c.state !== "bound" || c.ck === null) throw zoneError("zone.wrong_key", "container is not bound");
      if (!verifyRelayProof(fromBase64url(c.ck), cmd, proof)) await this.#spendAttempt(c);
      this.#seenRelays.set(cmd.id, cmd.created);
      switch (cmd.op) {
        case "put":
          await this.#put(c, cmd.name!, decodePackage(cmd.package!));
          return { op: cmd.op };
        case "get":
          return { op: cmd.op, package: await this.#get(c, cmd.name!) };
        case "delete":
          return { op: cmd.op, deleted: await this.#delete(c, cmd.name!) };
        default:
          return { op: cmd.op, names: Object.keys(c.packages).sort() };
      }
    });
  }

  /** HMAC-SHA256 under ZRK of an RFC 9421 signature base: the zone signs its requests, ZRK stays inside. */
  signRequest(signatureBase: Uint8Array): Uint8Array {
    return hmacSha256(this.#requireKeys().zrk, signatureBase);
  }

  /** The carrier's container map: occupant, limits, expiry, attempts, sizes — never contents or keys. */
  masterView(): ContainerView[] {
    return this.#record.containers.map(containerView);
  }

  /**
   * Security events (personalised, signals applied, sub-keys, wrong keys, locks, resets) with
   * seq > `since`; the carrier reads them. Refused junk is not here: see refusals().
   */
  events(since = 0): ZoneEvent[] {
    return this.#record.events.filter((e) => e.seq > since).map((e) => ({ ...e }));
  }

  /** How many signals and relayed commands the zone refused (malformed, forged, stale, replayed). */
  refusals(): ZoneRefusals {
    const r = this.#record.refusals;
    return { signal: { ...r.signal }, relay: { ...r.relay } };
  }

  /** Wipes everything but the HUK (and the event log); the zone must be re-personalised, at a higher epoch. */
  factoryReset(): Promise<void> {
    return this.#exclusive(async () => {
      await this.#store.wipePackages();
      const epoch = this.#record.personalisation?.epoch;
      if (epoch !== undefined) this.#record.minEpoch = Math.max(this.#record.minEpoch, epoch + 1);
      this.#record.personalisation = null;
      this.#keys?.uk.fill(0);
      this.#keys = null;
      this.#record.containers = this.#record.containers.map((c) =>
        freeRecord(c.index, null, c.generation + 1),
      );
      this.#seenRelays.clear();
      this.#event("factory_reset", undefined, epoch === undefined ? undefined : `was epoch ${epoch}`);
      await this.#save();
    });
  }

  toJSON(): { secureZone: string | null; epoch: number | null } {
    return { secureZone: this.zoneId ?? null, epoch: this.epoch ?? null };
  }

  // ---- internals ------------------------------------------------------------------------------

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #loadKeys(): void {
    const p = this.#record.personalisation;
    if (p === null) {
      this.#keys = null;
      return;
    }
    const uk = deriveUserKey(fromBase64url(p.zmk), p.userInfo, p.epoch);
    const pins: Record<string, Uint8Array> = {};
    for (const [kid, key] of Object.entries(p.trustZonePublicKeys)) pins[kid] = fromBase64url(key);
    this.#keys = {
      uk,
      zak: deriveZoneAdminKey(uk),
      zrk: deriveZoneRequestKey(uk),
      trustZonePublicKeys: pins,
    };
  }

  #requirePersonalised(): Personalisation {
    const p = this.#record.personalisation;
    if (p === null) throw zoneError("zone.not_personalised", "zone is not personalised", 409);
    return p;
  }

  #requireKeys(): Keys {
    this.#requirePersonalised();
    return this.#keys!;
  }

  #container(index: number, code: string): ContainerRecord {
    const c = Number.isInteger(index) ? this.#record.containers[index] : undefined;
    if (c === undefined) throw zoneError(code, `no container ${index}`, 404);
    return c;
  }

  async #spendAttempt(c: ContainerRecord): Promise<never> {
    c.attemptsLeft = Math.max(0, c.attemptsLeft - 1);
    if (c.attemptsLeft === 0) {
      c.state = "locked";
      c.generation++;
      this.#event("locked", c.index, c.occupant ?? "free");
      await this.#save();
      throw zoneError("zone.locked", `container ${c.index} is locked`, 423);
    }
    this.#event("wrong_key", c.index, `${c.attemptsLeft} attempts left`);
    await this.#save();
    throw zoneError("zone.wrong_key", `wrong key for container ${c.index}`);
  }

  async #openWith(index: number, key: Uint8Array, masterOnly: boolean): Promise<ContainerHandle> {
    this.#requirePersonalised();
    const c = usableContainer(this.#container(index, "zone.wrong_key"), this.#now());
    if (masterOnly && c.state !== "free") throw zoneError("zone.wrong_key", `container ${index} is not free`);
    // §6: a wrong key spends one attempt of the container's limit; a right key gives none back
    // (only a renew or a reclaim does), so guesses cannot be spread between legitimate opens.
    if (!keyMatchesCheck(key, fromBase64url(c.keyCheck))) await this.#spendAttempt(c);
    return this.#handle(c);
  }

  #handle(c: ContainerRecord): ContainerHandle {
    const generation = c.generation;
    const live = (): ContainerRecord => {
      if (c.generation !== generation || this.#record.containers[c.index] !== c)
        throw zoneError("zone.wrong_key", `container ${c.index} changed: open it again`);
      return usableContainer(c, this.#now());
    };
    return {
      index: c.index,
      put: (name, sealed) => this.#exclusive(async () => this.#put(live(), name, sealed)),
      get: (name) => this.#exclusive(async () => this.#get(live(), name)),
      delete: (name) => this.#exclusive(async () => this.#delete(live(), name)),
      list: () => this.#exclusive(async () => Object.keys(live().packages).sort()),
    };
  }

  async #put(c: ContainerRecord, name: string, sealed: Uint8Array): Promise<void> {
    checkPackageFits(c, name, sealed);
    await this.#store.putPackage(c.index, name, sealed);
    c.packages[name] = sealed.length;
    await this.#save();
  }

  async #get(c: ContainerRecord, name: string): Promise<Uint8Array | undefined> {
    checkPackageName(name);
    if (!Object.hasOwn(c.packages, name)) return undefined;
    return this.#store.getPackage(c.index, name);
  }

  async #delete(c: ContainerRecord, name: string): Promise<boolean> {
    checkPackageName(name);
    if (!Object.hasOwn(c.packages, name)) return false;
    await this.#store.deletePackage(c.index, name);
    delete c.packages[name];
    await this.#save();
    return true;
  }

  async #wipePackages(index: number): Promise<void> {
    await this.#store.wipePackages(index);
    this.#record.containers[index]!.packages = {};
  }

  async #applyKeyed(s: ZoneSignal, plan: KeyedPlanStep[]): Promise<void> {
    for (const { i, ck, rebind } of plan) {
      const c = this.#record.containers[i]!;
      if (!rebind) {
        Object.assign(c, {
          notAfter: s.notAfter!,
          maxAttempts: s.maxAttempts!,
          attemptsLeft: s.maxAttempts!,
        });
        continue;
      }
      // bind: a fresh container for its manager; renew keeps the packages (the manager re-seals them).
      if (s.type === "bind") await this.#wipePackages(i);
      bindRecord(this.#record.containers[i]!, ck, s.managerId!, s.jti!, s.notAfter!, s.maxAttempts!);
    }
  }

  async #free(index: number): Promise<void> {
    await this.#wipePackages(index);
    const c = this.#record.containers[index]!;
    this.#record.containers[index] = freeRecord(index, this.#requireKeys().uk, c.generation + 1);
  }

  #event(type: ZoneEventType, container?: number, detail?: string): void {
    logSecurityEvent(this.#record, this.#now(), type, container, detail);
  }

  #save(): Promise<void> {
    return this.#store.save(this.#record);
  }
}
