/**
 * The secure zone simulator (docs/protocols/trustzone.md §6): a TEE split into containers, reachable
 * only through this class, which enforces every limit itself. Node-free (MemoryKeystore in a browser,
 * FolderKeystore on Node).
 *
 * At rest, in the keystore:
 *   zone/huk                 the hardware unique key, 32 random bytes, created once, never wiped
 *   zone/state               nonce(12) ‖ AES-256-GCM(SSK, nonce, JSON state, aad)   — ZMK, keys, map, log
 *   zone/pkg/<i>/<h>         nonce(12) ‖ AES-256-GCM(SSK, nonce, package, aad)      — h = b64url(SHA-256(name))
 * with SSK = HKDF(HUK, storage) and aad = storage-record ‖ 0 ‖ entry name (a record cannot be moved to
 * another entry). Packages arrive already sealed under CK_i by their manager, so they are wrapped twice
 * and storage never sees a plaintext package, a ZMK, or a container key.
 *
 * Not covered (as keystore.ts): someone who can write the keystore can roll an entry back.
 */

import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { AEAD_NONCE_LENGTH, aesGcmOpen, aesGcmSeal } from "../core/crypto/aead.ts";
import { hmacSha256, sha256 } from "../core/crypto/hash.ts";
import type { HpkeSealed } from "../core/crypto/hpke.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import {
  checkPackageName,
  checkZoneId,
  deriveFreeContainerKey,
  deriveStorageKey,
  deriveUserKey,
  deriveZoneAdminKey,
  deriveZoneRequestKey,
  generateSubKeyMaterial,
  KEY_LENGTH,
  keyCheck,
  keyMatchesCheck,
  LABELS,
  parseRelayCommand,
  RELAY_MAX_AGE_MS,
  type RelayCommand,
  sealSubKeyForManager,
  unwrapSignalKey,
  verifyRelayProof,
  verifySignal,
  verifyToken,
  type ZoneSignal,
} from "../trustzone/protocol.ts";
import type { Keystore } from "./keystore.ts";

export const DEFAULT_CONTAINERS = 16;
/** Wrong keys a free container (the master's) tolerates before it locks. */
export const FREE_CONTAINER_ATTEMPTS = 5;
export const MAX_PACKAGE_BYTES = 64 * 1024;
export const MAX_PACKAGES_PER_CONTAINER = 64;
export const MAX_CONTAINER_BYTES = 1024 * 1024;
const MAX_EVENTS = 1000;

const HUK_ENTRY = "zone/huk";
const STATE_ENTRY = "zone/state";
const PACKAGE_PREFIX = "zone/pkg/";

export type ContainerState = "free" | "bound" | "locked";

export interface ZoneBundle {
  zoneId: string;
  zmk: Uint8Array;
  userInfo: string;
  epoch: number;
  /** The pinned trust-zone token-signing keys: kid → Ed25519 public key. */
  trustZonePublicKeys: Record<string, Uint8Array>;
}

export interface ContainerView {
  index: number;
  state: ContainerState;
  occupant: string | null;
  jti: string | null;
  notAfter: number | null;
  maxAttempts: number;
  attemptsLeft: number;
  packages: number;
  bytes: number;
}

export type ZoneEventType =
  | "personalised"
  | "signal_applied"
  | "signal_refused"
  | "subkey_generated"
  | "wrong_key"
  | "locked"
  | "relay_refused"
  | "factory_reset";

export interface ZoneEvent {
  seq: number;
  at: number;
  type: ZoneEventType;
  container?: number;
  detail?: string;
}

export interface SubKeyResult {
  jti: string;
  managerId: string;
  /** SK, HPKE-sealed to the manager (open with protocol.openSubKey). */
  sealedSubKey: HpkeSealed;
  /** What the zone reports to the server: container indices and KC_i, never CK_i. */
  containers: { index: number; keyCheck: Uint8Array }[];
  notAfter: number;
  maxAttempts: number;
}

export interface ContainerHandle {
  readonly index: number;
  put(name: string, sealedPackage: Uint8Array): Promise<void>;
  get(name: string): Promise<Uint8Array | undefined>;
  delete(name: string): Promise<boolean>;
  list(): Promise<string[]>;
}

export interface RelayResult {
  op: RelayCommand["op"];
  package?: Uint8Array | undefined;
  deleted?: boolean;
  names?: string[];
}

// ---- persisted records ----------------------------------------------------------------------

interface ContainerRecord {
  index: number;
  state: ContainerState;
  occupant: string | null;
  jti: string | null;
  notAfter: number | null;
  maxAttempts: number;
  attemptsLeft: number;
  /** base64url KC of the key that opens it: FK_i while free, CK_i while bound. */
  keyCheck: string;
  /** base64url CK_i while bound (relay proofs are HMACs under it). */
  ck: string | null;
  /** name → sealed size. */
  packages: Record<string, number>;
  /** Bumped on every bind/renew/free/lock: an open handle of an older generation is dead. */
  generation: number;
}

interface Personalisation {
  zoneId: string;
  epoch: number;
  zmk: string;
  userInfo: string;
  trustZonePublicKeys: Record<string, string>;
  lastSeq: number;
}

interface ZoneRecord {
  version: 1;
  containerCount: number;
  /** A re-personalisation must carry an epoch at least this (a factory reset raises it). */
  minEpoch: number;
  personalisation: Personalisation | null;
  containers: ContainerRecord[];
  events: ZoneEvent[];
  eventSeq: number;
}

interface Keys {
  uk: Uint8Array;
  zak: Uint8Array;
  zrk: Uint8Array;
  trustZonePublicKeys: Record<string, Uint8Array>;
}

function zoneError(code: string, message: string, status = 403): HandsafeError {
  return new HandsafeError(code, message, { status });
}

function recordAad(entry: string): Uint8Array {
  return concatBytes(utf8(LABELS.storageRecord), new Uint8Array([0]), utf8(entry));
}

function packageEntry(index: number, name: string): string {
  return `${PACKAGE_PREFIX}${index}/${toBase64url(sha256(utf8(name)))}`;
}

function freeRecord(index: number, uk: Uint8Array | null, generation: number): ContainerRecord {
  return {
    index,
    state: "free",
    occupant: null,
    jti: null,
    notAfter: null,
    maxAttempts: FREE_CONTAINER_ATTEMPTS,
    attemptsLeft: FREE_CONTAINER_ATTEMPTS,
    keyCheck: uk ? toBase64url(keyCheck(deriveFreeContainerKey(uk, index))) : "",
    ck: null,
    packages: {},
    generation,
  };
}

export class SecureZone {
  readonly #keystore: Keystore;
  readonly #ssk: Uint8Array;
  readonly #now: () => number;
  #record: ZoneRecord;
  #keys: Keys | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  /** Relay command ids seen within RELAY_MAX_AGE_MS (in memory: a restart forgets them). */
  readonly #seenRelays = new Map<string, number>();

  private constructor(keystore: Keystore, ssk: Uint8Array, record: ZoneRecord, now: () => number) {
    this.#keystore = keystore;
    this.#ssk = ssk;
    this.#record = record;
    this.#now = now;
    this.#loadKeys();
  }

  /** Opens (or creates) the zone kept in `keystore`. The HUK is generated on the first open. */
  static async open(
    keystore: Keystore,
    options: { containers?: number; now?: () => number } = {},
  ): Promise<SecureZone> {
    let huk = await keystore.get(HUK_ENTRY);
    if (huk === undefined) {
      huk = randomBytes(KEY_LENGTH);
      await keystore.put(HUK_ENTRY, huk);
    }
    if (huk.length !== KEY_LENGTH) throw zoneError("zone.corrupt", "zone HUK has the wrong length", 500);
    const ssk = deriveStorageKey(huk);
    huk.fill(0);
    const sealed = await keystore.get(STATE_ENTRY);
    let record: ZoneRecord;
    if (sealed === undefined) {
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
      };
    } else {
      record = JSON.parse(fromUtf8(openRecord(ssk, STATE_ENTRY, sealed))) as ZoneRecord;
    }
    const zone = new SecureZone(keystore, ssk, record, options.now ?? Date.now);
    if (sealed === undefined) await zone.#save();
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
      checkZoneId(bundle.zoneId);
      if (!(bundle.zmk instanceof Uint8Array) || bundle.zmk.length !== KEY_LENGTH)
        throw zoneError("zone.invalid_bundle", "ZMK must be 32 bytes", 400);
      if (!Number.isInteger(bundle.epoch) || bundle.epoch < this.#record.minEpoch)
        throw zoneError("zone.invalid_bundle", `epoch must be at least ${this.#record.minEpoch}`, 400);
      if (typeof bundle.userInfo !== "string" || bundle.userInfo.length === 0)
        throw zoneError("zone.invalid_bundle", "user info is required", 400);
      const pins: Record<string, string> = {};
      for (const [kid, key] of Object.entries(bundle.trustZonePublicKeys ?? {})) {
        if (!(key instanceof Uint8Array) || key.length !== 32)
          throw zoneError("zone.invalid_bundle", "trust-zone keys must be 32-byte Ed25519 keys", 400);
        pins[kid] = toBase64url(key);
      }
      if (Object.keys(pins).length === 0)
        throw zoneError("zone.invalid_bundle", "no trust-zone key to pin", 400);
      this.#record.personalisation = {
        zoneId: bundle.zoneId,
        epoch: bundle.epoch,
        zmk: toBase64url(bundle.zmk),
        userInfo: bundle.userInfo,
        trustZonePublicKeys: pins,
        lastSeq: 0,
      };
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
      let plan: { i: number; ck: Uint8Array; rebind: boolean }[] = [];
      try {
        s = verifySignal(keys.zak, signal, mac, { zoneId: p.zoneId, epoch: p.epoch, lastSeq: p.lastSeq });
        for (const i of s.containers) this.#container(i, "zone.signal_invalid");
        if (s.type === "bind" || s.type === "renew") plan = this.#planKeyed(s, keys.zak, p);
      } catch (e) {
        if (isHandsafeError(e, "zone.signal_invalid")) {
          this.#event("signal_refused", undefined, e.message);
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
        this.#bind(index, ck, claims.sub, claims.jti, notAfter, claims.limits.maxAttempts);
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
          this.#event("relay_refused", undefined, e.message);
          await this.#save();
        }
        throw e;
      }
      const c = this.#usable(this.#container(cmd.container, "zone.relay_invalid"), now);
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
    return this.#record.containers.map((c) => {
      const sizes = Object.values(c.packages);
      return {
        index: c.index,
        state: c.state,
        occupant: c.occupant,
        jti: c.jti,
        notAfter: c.notAfter,
        maxAttempts: c.maxAttempts,
        attemptsLeft: c.attemptsLeft,
        packages: sizes.length,
        bytes: sizes.reduce((a, b) => a + b, 0),
      };
    });
  }

  /** Security events (locks, resets, signals applied or refused…) with seq > `since`; the carrier reads them. */
  events(since = 0): ZoneEvent[] {
    return this.#record.events.filter((e) => e.seq > since).map((e) => ({ ...e }));
  }

  /** Wipes everything but the HUK (and the event log); the zone must be re-personalised, at a higher epoch. */
  factoryReset(): Promise<void> {
    return this.#exclusive(async () => {
      for (const name of await this.#keystore.list(PACKAGE_PREFIX)) await this.#keystore.delete(name);
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

  /** Locked and expired containers open for nobody; checked before any key comparison. */
  #usable(c: ContainerRecord, now: number): ContainerRecord {
    if (c.state === "locked") throw zoneError("zone.locked", `container ${c.index} is locked`, 423);
    if (c.state === "bound" && c.notAfter !== null && now >= c.notAfter)
      throw zoneError("zone.expired", `container ${c.index} has expired`);
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
    const c = this.#usable(this.#container(index, "zone.wrong_key"), this.#now());
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
      return this.#usable(c, this.#now());
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
    checkPackageName(name);
    if (!(sealed instanceof Uint8Array) || sealed.length === 0 || sealed.length > MAX_PACKAGE_BYTES)
      throw zoneError("zone.full", `a package is 1..${MAX_PACKAGE_BYTES} bytes`, 413);
    const others = Object.entries(c.packages).filter(([n]) => n !== name);
    if (others.length >= MAX_PACKAGES_PER_CONTAINER)
      throw zoneError("zone.full", "container holds too many packages", 413);
    if (others.reduce((a, [, n]) => a + n, 0) + sealed.length > MAX_CONTAINER_BYTES)
      throw zoneError("zone.full", "container is full", 413);
    const entry = packageEntry(c.index, name);
    await this.#keystore.put(entry, sealRecord(this.#ssk, entry, sealed));
    c.packages[name] = sealed.length;
    await this.#save();
  }

  async #get(c: ContainerRecord, name: string): Promise<Uint8Array | undefined> {
    checkPackageName(name);
    if (!Object.hasOwn(c.packages, name)) return undefined;
    const entry = packageEntry(c.index, name);
    const stored = await this.#keystore.get(entry);
    return stored === undefined ? undefined : openRecord(this.#ssk, entry, stored);
  }

  async #delete(c: ContainerRecord, name: string): Promise<boolean> {
    checkPackageName(name);
    if (!Object.hasOwn(c.packages, name)) return false;
    await this.#keystore.delete(packageEntry(c.index, name));
    delete c.packages[name];
    await this.#save();
    return true;
  }

  async #wipePackages(index: number): Promise<void> {
    for (const name of await this.#keystore.list(`${PACKAGE_PREFIX}${index}/`))
      await this.#keystore.delete(name);
    this.#record.containers[index]!.packages = {};
  }

  #bind(
    index: number,
    ck: Uint8Array,
    managerId: string,
    jti: string,
    notAfter: number,
    maxAttempts: number,
  ): void {
    const c = this.#record.containers[index]!;
    Object.assign(c, {
      state: "bound",
      occupant: managerId,
      jti,
      notAfter,
      maxAttempts,
      attemptsLeft: maxAttempts,
      keyCheck: toBase64url(keyCheck(ck)),
      ck: toBase64url(ck),
      generation: c.generation + 1,
    } satisfies Partial<ContainerRecord>);
  }

  /** bind / renew: every check first (all keys unwrap, every state fits), then the changes. */
  #planKeyed(
    s: ZoneSignal,
    zak: Uint8Array,
    p: Personalisation,
  ): { i: number; ck: Uint8Array; rebind: boolean }[] {
    return s.containers.map((i) => {
      const c = this.#record.containers[i]!;
      const ck = unwrapSignalKey(zak, p.zoneId, p.epoch, i, s.keys![String(i)]!);
      if (s.type === "bind") {
        // Handset placement already bound it: the server's bind for the same token only confirms.
        const confirms =
          c.state === "bound" && c.jti === s.jti && keyMatchesCheck(ck, fromBase64url(c.keyCheck));
        if (c.state !== "free" && !confirms)
          throw zoneError("zone.signal_invalid", `container ${i} is not free`, 409);
        return { i, ck, rebind: !confirms };
      }
      if (c.state !== "bound" || c.occupant !== s.managerId)
        throw zoneError("zone.signal_invalid", `container ${i} is not bound to ${s.managerId}`, 409);
      return { i, ck, rebind: true };
    });
  }

  async #applyKeyed(s: ZoneSignal, plan: { i: number; ck: Uint8Array; rebind: boolean }[]): Promise<void> {
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
      this.#bind(i, ck, s.managerId!, s.jti!, s.notAfter!, s.maxAttempts!);
    }
  }

  async #free(index: number): Promise<void> {
    await this.#wipePackages(index);
    const c = this.#record.containers[index]!;
    this.#record.containers[index] = freeRecord(index, this.#requireKeys().uk, c.generation + 1);
  }

  #event(type: ZoneEventType, container?: number, detail?: string): void {
    const r = this.#record;
    r.eventSeq++;
    const event: ZoneEvent = { seq: r.eventSeq, at: this.#now(), type };
    if (container !== undefined) event.container = container;
    if (detail !== undefined) event.detail = detail;
    r.events.push(event);
    if (r.events.length > MAX_EVENTS) r.events.splice(0, r.events.length - MAX_EVENTS);
  }

  async #save(): Promise<void> {
    await this.#keystore.put(
      STATE_ENTRY,
      sealRecord(this.#ssk, STATE_ENTRY, utf8(JSON.stringify(this.#record))),
    );
  }
}

function decodePackage(text: string): Uint8Array {
  try {
    return fromBase64url(text, "package");
  } catch {
    throw zoneError("zone.relay_invalid", "package is not base64url", 400);
  }
}

function sealRecord(ssk: Uint8Array, entry: string, plaintext: Uint8Array): Uint8Array {
  const nonce = randomBytes(AEAD_NONCE_LENGTH);
  return concatBytes(nonce, aesGcmSeal(ssk, nonce, plaintext, recordAad(entry)));
}

function openRecord(ssk: Uint8Array, entry: string, sealed: Uint8Array): Uint8Array {
  try {
    if (sealed.length < AEAD_NONCE_LENGTH + 16) throw new Error("short");
    return aesGcmOpen(
      ssk,
      sealed.subarray(0, AEAD_NONCE_LENGTH),
      sealed.subarray(AEAD_NONCE_LENGTH),
      recordAad(entry),
    );
  } catch (cause) {
    throw new HandsafeError("zone.corrupt", `zone record ${entry} does not open`, { status: 500, cause });
  }
}
