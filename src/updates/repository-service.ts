/**
 * The server's TUF repository (docs/protocols/updates.md §TUF): the pure model of src/updates/tuf
 * over the database. On first start it creates one Ed25519 key per role (root threshold 1), sealed
 * at rest with the keyring under "updates/tuf-key/<role>/<keyid>". The repository record and its
 * revision live in `tuf_repository`; every change is a compare-and-set on that revision, so any
 * number of server nodes share one repository. Versioned metadata files are write-once rows of
 * `tuf_files`; timestamp.json is read from the record and re-signed when it is served within half
 * of its lifetime of expiry (snapshot and targets likewise), or by `refreshIfDue` on a timer.
 *
 * Offline root: `exportRootKey` hands the root seed out once and `forgetRootKey` deletes it; from
 * then on a new root is `prepareRoot` → signOffline elsewhere → `commitRoot`.
 */
import type { Kysely } from "kysely";
import { fromHex, fromUtf8, toHex, utf8 } from "../core/codec/bytes.ts";
import { generateSigningKey } from "../core/crypto/index.ts";
import { HandsafeError } from "../core/errors.ts";
import type { Platform } from "../platform/context.ts";
import * as store from "./store.ts";
import {
  addSignature,
  ed25519TufKey,
  keyidOf,
  type Metadata,
  type OnlineRole,
  ROLE_NAMES,
  type RoleChange,
  type RoleName,
  type RootSigned,
  type Signer,
  seedSigner,
  signOffline,
  type TargetFile,
  TufRepository,
  type TufRepositoryRecord,
  type TufSignature,
} from "./tuf/index.ts";
import { parseMetadataObject, signedBytes } from "./tuf/metadata.ts";

const VERSIONED_FILE = /^[1-9][0-9]{0,9}\.(root|targets|snapshot)\.json$/;
const ONLINE_ROLES: readonly OnlineRole[] = ["targets", "snapshot", "timestamp"];
const MAX_ATTEMPTS = 8;

export function tufKeyAad(role: string, keyid: string): string {
  return `updates/tuf-key/${role}/${keyid}`;
}

/** What `export-root-key` writes to its file: the root seed, for the offline machine only. */
export interface ExportedRootKey {
  format: "handsafe/tuf-key/v1";
  role: "root";
  keyid: string;
  publicKey: string;
  /** The 32-byte Ed25519 seed, hex. */
  seed: string;
}

class Conflict extends Error {}

export class TufRepositoryService {
  private readonly db: Kysely<store.UpdatesTables>;
  /** Serialises this node's own writers; other nodes are kept out by the revision check. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly platform: Platform) {
    this.db = platform.db;
  }

  private now(): Date {
    return new Date(this.platform.clock());
  }

  /** Creates the keys and the first version of every role, unless the repository exists. */
  async init(): Promise<void> {
    if (await store.findRepository(this.db)) return;
    const now = this.platform.clock();
    const keys = ROLE_NAMES.map((role) => ({ role, pair: generateSigningKey() }));
    const signers = keys.map((k) => seedSigner(k.pair.seed));
    const roles = {} as Record<RoleName, { keys: ReturnType<typeof ed25519TufKey>[]; threshold: number }>;
    for (const role of ROLE_NAMES)
      roles[role] = {
        keys: [ed25519TufKey(keys.find((k) => k.role === role)!.pair.publicKey)],
        threshold: 1,
      };
    const repo = await TufRepository.create({ roles, signers, now: new Date(now) });
    try {
      await this.db.transaction().execute(async (trx) => {
        if (!(await store.insertRepository(trx, JSON.stringify(repo.toRecord()), now))) throw new Conflict();
        for (const { role, pair } of keys) {
          const keyid = keyidOf(ed25519TufKey(pair.publicKey));
          await store.insertKey(trx, {
            keyid,
            role,
            publicKey: toHex(pair.publicKey),
            sealedSeed: this.platform.keyring.sealAtRest(pair.seed, tufKeyAad(role, keyid)),
            state: "active",
            createdAt: now,
          });
        }
        await store.insertFiles(trx, versionedFiles(repo), now);
      });
    } catch (e) {
      if (!(e instanceof Conflict)) throw e;
      // Another node created the repository first: its keys and files are the ones.
    } finally {
      for (const k of keys) k.pair.seed.fill(0);
    }
    await this.platform.audit({ actor: "system", action: "updates.tuf_created", outcome: "info" });
  }

  // --- serving --------------------------------------------------------------------------------

  /** A metadata file by name; tuf.not_found (404) for anything not (yet) there, e.g. the next root. */
  async file(name: string): Promise<Uint8Array> {
    if (name === "timestamp.json") {
      await this.refreshIfDue();
      const row = await this.requireRow();
      return utf8((JSON.parse(row.record) as TufRepositoryRecord).timestamp);
    }
    const bytes = VERSIONED_FILE.test(name) ? await store.findFile(this.db, name) : undefined;
    if (!bytes) throw new HandsafeError("tuf.not_found", `no TUF metadata file ${name}`, { status: 404 });
    return bytes;
  }

  /** 1.root.json: what a handset is built with (its trust anchor). */
  trustedRoot(): Promise<Uint8Array> {
    return this.file("1.root.json");
  }

  /** The current model (read-only use: targets, root, …). */
  async current(): Promise<TufRepository> {
    return TufRepository.fromRecord(JSON.parse((await this.requireRow()).record) as TufRepositoryRecord);
  }

  // --- changes --------------------------------------------------------------------------------

  /** Adds (or replaces) a target and publishes targets → snapshot → timestamp. */
  async addTarget(path: string, file: TargetFile): Promise<void> {
    await this.mutate(async (repo, signers) => {
      repo.addTarget(path, file);
      await repo.publish(signers, this.now());
    });
  }

  /**
   * Re-signs each online role that is within half of its lifetime of expiry. Returns the roles
   * re-signed (none most of the time: then nothing is written).
   */
  async refreshIfDue(): Promise<OnlineRole[]> {
    const due = dueRoles(await this.current(), this.platform.clock());
    if (due.length === 0) return [];
    let done: OnlineRole[] = [];
    await this.mutate(async (repo, signers) => {
      done = dueRoles(repo, this.platform.clock());
      if (done.length === 0) return false;
      for (const role of done) repo.bump(role);
      await repo.publish(signers, this.now());
    });
    return done;
  }

  // --- root: offline key and rotation ---------------------------------------------------------

  /** The root seed held by the server, for `export-root-key`; the key stays until forgetRootKey. */
  async exportRootKey(actor: string): Promise<ExportedRootKey> {
    const root = (await this.current()).root.signed;
    const held = (await store.listKeys(this.db)).find(
      (k) => k.role === "root" && k.sealedSeed !== null && root.roles.root.keyids.includes(k.keyid),
    );
    if (!held)
      throw new HandsafeError("updates.root_key_offline", "the server holds no root key (it is offline)", {
        status: 409,
      });
    const seed = this.platform.keyring.openAtRest(held.sealedSeed!, tufKeyAad("root", held.keyid));
    await this.platform.audit({
      actor,
      action: "updates.tuf_root_key_exported",
      subject: `tuf-key:${held.keyid}`,
      outcome: "allow",
    });
    try {
      return {
        format: "handsafe/tuf-key/v1",
        role: "root",
        keyid: held.keyid,
        publicKey: held.publicKey,
        seed: toHex(seed),
      };
    } finally {
      seed.fill(0);
    }
  }

  /** Deletes the root seed from the server: from now on the root is signed offline only. */
  async forgetRootKey(keyid: string, actor: string): Promise<void> {
    const key = (await store.listKeys(this.db)).find((k) => k.keyid === keyid && k.role === "root");
    if (!key || !(await store.forgetKeySeed(this.db, keyid)))
      throw new HandsafeError("updates.unknown_key", `the server holds no root key ${keyid}`, {
        status: 404,
      });
    await this.platform.audit({
      actor,
      action: "updates.tuf_root_key_removed",
      subject: `tuf-key:${keyid}`,
      outcome: "allow",
    });
  }

  /**
   * Root N+1 with a fresh server-held key for each role in `rotate` (the old keys of those roles
   * leave the root), unsigned, as pretty JSON for the offline signers. It replaces any root
   * prepared before and waits for commitRoot.
   */
  async prepareRoot(rotate: readonly RoleName[], actor: string): Promise<string> {
    for (const role of rotate)
      if (!ROLE_NAMES.includes(role))
        throw new HandsafeError("updates.invalid_role", `no TUF role ${role}`, { status: 400 });
    const now = this.platform.clock();
    const fresh = rotate.map((role) => ({ role, pair: generateSigningKey() }));
    let text = "";
    try {
      await this.mutate(async (repo, _signers, trx) => {
        const current = repo.root.signed;
        const changes: Partial<Record<RoleName, RoleChange>> = {};
        for (const { role, pair } of fresh)
          changes[role] = { add: [ed25519TufKey(pair.publicKey)], remove: current.roles[role].keyids };
        text = fromUtf8(repo.prepareRootUpdate(changes, this.now()).bytes);
        for (const k of await store.listKeys(trx))
          if (k.state === "pending") await store.setKeyState(trx, k.keyid, "retired");
        for (const { role, pair } of fresh) {
          const keyid = keyidOf(ed25519TufKey(pair.publicKey));
          await store.insertKey(trx, {
            keyid,
            role,
            publicKey: toHex(pair.publicKey),
            sealedSeed: this.platform.keyring.sealAtRest(pair.seed, tufKeyAad(role, keyid)),
            state: "pending",
            createdAt: now,
          });
        }
        return { pendingRoot: text };
      });
    } finally {
      for (const k of fresh) k.pair.seed.fill(0);
    }
    await this.platform.audit({
      actor,
      action: "updates.tuf_root_prepared",
      outcome: "info",
      details: { rotate: [...rotate] },
    });
    return text;
  }

  /** The root waiting for signatures, or undefined. */
  async pendingRoot(): Promise<string | undefined> {
    return (await this.requireRow()).pendingRoot ?? undefined;
  }

  /**
   * Accepts the prepared root with signatures: either the signed document (its `signed` must be
   * exactly the prepared one) or bare `{keyid, sig}` signatures. Root keys the server still holds
   * sign too. Checked as a client will (old and new root thresholds), then the online roles whose
   * keys changed are re-signed by their new keys; retired keys' seeds are deleted.
   */
  async commitRoot(input: unknown, actor: string): Promise<{ version: number }> {
    let version = 0;
    try {
      await this.mutate(async (repo, signers, trx, row) => {
        if (!row.pendingRoot)
          throw new HandsafeError("updates.no_pending_root", "no root is prepared: run prepare-root first", {
            status: 409,
          });
        let next = parseMetadataObject(JSON.parse(row.pendingRoot), "root") as Metadata<RootSigned>;
        for (const s of signaturesOf(input, next)) next = addSignature(next, s.keyid, s.sig);
        const message = signedBytes(next);
        const rootKeyids = new Set([...repo.root.signed.roles.root.keyids, ...next.signed.roles.root.keyids]);
        for (const signer of signers)
          if (rootKeyids.has(signer.keyid))
            next = addSignature(next, signer.keyid, await signer.sign(message));
        repo.commitRootUpdate(next);
        await repo.publish(signers, this.now());
        version = next.signed.version;
        // Keys the new root names are active; every other key is retired and its seed deleted.
        for (const k of await store.listKeys(trx)) {
          const named = next.signed.roles[k.role as RoleName]?.keyids.includes(k.keyid) ?? false;
          if (named && k.state !== "active") await store.setKeyState(trx, k.keyid, "active");
          if (!named && k.state !== "retired") {
            await store.setKeyState(trx, k.keyid, "retired");
            await store.forgetKeySeed(trx, k.keyid);
          }
        }
        return { pendingRoot: null };
      });
    } catch (e) {
      await this.platform.audit({
        actor,
        action: "updates.tuf_root_committed",
        outcome: "deny",
        details: { code: e instanceof HandsafeError ? e.code : "internal" },
      });
      throw e;
    }
    await this.platform.audit({
      actor,
      action: "updates.tuf_root_committed",
      subject: `tuf-root:${version}`,
      outcome: "allow",
    });
    return { version };
  }

  /** Which keys the server holds, by role (public parts and state only). */
  async keys(): Promise<Array<{ keyid: string; role: string; state: string; online: boolean }>> {
    return (await store.listKeys(this.db)).map((k) => ({
      keyid: k.keyid,
      role: k.role,
      state: k.state,
      online: k.sealedSeed !== null,
    }));
  }

  // --- internals ------------------------------------------------------------------------------

  private async requireRow(): Promise<store.RepositoryRow> {
    const row = await store.findRepository(this.db);
    if (!row)
      throw new HandsafeError("tuf.not_found", "the TUF repository is not created yet", { status: 404 });
    return row;
  }

  /** Server-held seeds as signers (active and pending keys; publish picks the ones root names). */
  private async signers(db: store.Db): Promise<Signer[]> {
    const out: Signer[] = [];
    for (const k of await store.listKeys(db)) {
      if (k.sealedSeed === null || k.state === "retired") continue;
      const seed = this.platform.keyring.openAtRest(k.sealedSeed, tufKeyAad(k.role, k.keyid));
      out.push(seedSigner(seed));
      seed.fill(0);
    }
    return out;
  }

  /**
   * Read → change → compare-and-set, retried when another node changed the repository meanwhile.
   * `change` returns false for "nothing to write", or the new pending root.
   */
  private mutate(
    change: (
      repo: TufRepository,
      signers: Signer[],
      trx: store.Db,
      row: store.RepositoryRow,
    ) => Promise<unknown>,
  ): Promise<void> {
    const run = async () => {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        try {
          await this.db.transaction().execute(async (trx) => {
            const row = await store.findRepository(trx);
            if (!row) throw new HandsafeError("tuf.not_found", "the TUF repository is not created yet");
            const repo = TufRepository.fromRecord(JSON.parse(row.record) as TufRepositoryRecord);
            const result = await change(repo, await this.signers(trx), trx, row);
            if (result === false) return;
            const pendingRoot =
              typeof result === "object" && result !== null && "pendingRoot" in result
                ? (result as { pendingRoot: string | null }).pendingRoot
                : row.pendingRoot;
            const now = this.platform.clock();
            const ok = await store.updateRepository(
              trx,
              row.revision,
              { record: JSON.stringify(repo.toRecord()), pendingRoot },
              now,
            );
            if (!ok) throw new Conflict();
            await store.insertFiles(trx, versionedFiles(repo), now);
          });
          return;
        } catch (e) {
          if (!(e instanceof Conflict)) throw e;
        }
      }
      throw new HandsafeError("updates.tuf_busy", "the TUF repository kept changing; try again", {
        status: 503,
      });
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => {});
    return next;
  }
}

/** Every file except timestamp.json (served from the record; the one name that changes). */
function versionedFiles(repo: TufRepository): Array<[string, Uint8Array]> {
  return [...repo.files()].filter(([name]) => name !== "timestamp.json");
}

function dueRoles(repo: TufRepository, now: number): OnlineRole[] {
  const record = repo.toRecord();
  const signed = {
    targets: repo.targets.signed,
    snapshot: repo.snapshot.signed,
    timestamp: repo.timestamp.signed,
  };
  return ONLINE_ROLES.filter((role) => {
    const left = Date.parse(signed[role].expires) - now;
    return left < (record.expiries[role] * 1000) / 2;
  });
}

/** Signatures carried back from the offline machine, in either form commit-root accepts. */
function signaturesOf(input: unknown, pending: Metadata<RootSigned>): TufSignature[] {
  const bad = (why: string) => new HandsafeError("updates.invalid_root_signatures", why, { status: 400 });
  const one = (s: unknown): TufSignature => {
    const o = s as { keyid?: unknown; sig?: unknown };
    if (typeof o?.keyid !== "string" || typeof o.sig !== "string")
      throw bad("a signature is {keyid, sig} (hex)");
    return { keyid: o.keyid, sig: o.sig };
  };
  if (Array.isArray(input)) return input.map(one);
  if (typeof input !== "object" || input === null) throw bad("expected signed root metadata or signatures");
  const o = input as { signed?: unknown; signatures?: unknown; keyid?: unknown };
  if (o.signed !== undefined) {
    if (toHex(signedBytes({ signatures: [], signed: o.signed })) !== toHex(signedBytes(pending)))
      throw new HandsafeError(
        "updates.root_mismatch",
        "the signed root is not the one prepared on this server (prepare it again?)",
        { status: 409 },
      );
    if (!Array.isArray(o.signatures)) throw bad("signed metadata needs a signatures array");
    return o.signatures.map(one);
  }
  if (o.keyid !== undefined) return [one(o)];
  if (Array.isArray(o.signatures)) return o.signatures.map(one);
  throw bad("expected signed root metadata or signatures");
}

/**
 * For the offline machine (no server, no database): signs prepared root metadata with an exported
 * key file through signOffline, and returns the document with the signature added.
 */
export function signRootOffline(metadataJson: string, keyFile: ExportedRootKey): Metadata<RootSigned> {
  if (keyFile?.format !== "handsafe/tuf-key/v1" || !/^[0-9a-f]{64}$/.test(String(keyFile.seed)))
    throw new HandsafeError("updates.invalid_key_file", "not a handsafe TUF key file", { status: 400 });
  const seed = fromHex(keyFile.seed);
  try {
    const { keyid, sig } = signOffline(metadataJson, seed);
    return addSignature(JSON.parse(metadataJson) as Metadata<RootSigned>, keyid, sig);
  } finally {
    seed.fill(0);
  }
}
