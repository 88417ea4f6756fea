import { createCipheriv, createDecipheriv, createHash } from "node:crypto";
import {
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { concatBytes, toHex, utf8 } from "../core/codec/bytes.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { Config } from "./config.ts";

/**
 * Data at rest: envelope encryption with AES-256-GCM (docs/storage.md, "At-rest envelope").
 *
 *   sealed = 0x01                                   version
 *         || kidLen (1 byte) || kid (ASCII hex)     which KEK wrapped the data key
 *         || wrapNonce (12) || AES-GCM_KEK(dek) (32) || wrapTag (16)
 *         || nonce (12) || AES-GCM_dek(plaintext) || tag (16)
 *
 *   header   = version || kidLen || kid
 *   wrap AAD = "handsafe/v1/at-rest/dek"  || 0x00 || header || utf8(aad)
 *   data AAD = "handsafe/v1/at-rest/data" || 0x00 || header || utf8(aad)
 *
 * `aad` names the record's place ("activation/service-key/<id>"), so a sealed value copied into
 * another row does not open. Every record has a fresh random 256-bit data key, so a nonce is
 * used once per key and no per-KEK message counter is needed.
 */

export const AT_REST_VERSION = 1;
export const KEK_ID_LABEL = "handsafe/v1/kek-id";
export const AT_REST_DEK_LABEL = "handsafe/v1/at-rest/dek";
export const AT_REST_DATA_LABEL = "handsafe/v1/at-rest/data";

export const MASTER_KEY_FILE = "master.key";

const KEY_LENGTH = 32;
const NONCE_LENGTH = 12;
const TAG_LENGTH = 16;
const WRAPPED_LENGTH = NONCE_LENGTH + KEY_LENGTH + TAG_LENGTH;

/** kid = first 8 hex characters of SHA-256("handsafe/v1/kek-id" || key). */
export function kekId(key: Uint8Array): string {
  return createHash("sha256").update(KEK_ID_LABEL).update(key).digest("hex").slice(0, 8);
}

export interface Keyring {
  /** The kid new seals use. */
  readonly currentKid: string;
  /** Every kid that can open: the current one first. */
  readonly kids: readonly string[];
  sealAtRest(plaintext: Uint8Array, aad: string): Uint8Array;
  /** Plaintext, or HandsafeError("storage.decrypt_failed"). */
  openAtRest(sealed: Uint8Array, aad: string): Uint8Array;
  /** Opens with any KEK and seals again under the current one (fresh data key). */
  rewrap(sealed: Uint8Array, aad: string): Uint8Array;
  /** True when `sealed` was not sealed under the current KEK (a rotation job rewraps those). */
  needsRewrap(sealed: Uint8Array): boolean;
}

/** A keyring from raw keys: `current` seals, all of them open. Duplicates are ignored. */
export function createKeyring(current: Uint8Array, previous: readonly Uint8Array[] = []): Keyring {
  const keks = new Map<string, Uint8Array>();
  for (const key of [current, ...previous]) {
    if (key.length !== KEY_LENGTH)
      throw new HandsafeError("keyring.invalid_key", `a key-encryption key must be ${KEY_LENGTH} bytes`, {
        status: 500,
      });
    const kid = kekId(key);
    if (!keks.has(kid)) keks.set(kid, Uint8Array.from(key));
  }
  const currentKid = kekId(current);
  const currentKey = keks.get(currentKid)!;

  const open = (sealed: Uint8Array, aad: string): Uint8Array => {
    const parsed = parseEnvelope(sealed);
    const kek = keks.get(parsed.kid);
    if (kek === undefined) throw decryptFailed(`sealed under unknown key id ${parsed.kid}`);
    const aadBytes = utf8(aad);
    const dek = gcmOpen(kek, parsed.wrapped, labelled(AT_REST_DEK_LABEL, parsed.header, aadBytes));
    if (dek.length !== KEY_LENGTH) throw decryptFailed("data key has the wrong length");
    try {
      return gcmOpen(dek, parsed.body, labelled(AT_REST_DATA_LABEL, parsed.header, aadBytes));
    } finally {
      dek.fill(0);
    }
  };

  // What every seal under the current KEK starts with: the header, and each AAD's label || 0 || header.
  const kidBytes = utf8(currentKid);
  const header = concatBytes(Uint8Array.of(AT_REST_VERSION, kidBytes.length), kidBytes);
  const dekAadPrefix = labelled(AT_REST_DEK_LABEL, header, new Uint8Array(0));
  const dataAadPrefix = labelled(AT_REST_DATA_LABEL, header, new Uint8Array(0));

  // Written in place: header || wrap nonce || wrapped data key || wrap tag || nonce || ciphertext || tag.
  const seal = (plaintext: Uint8Array, aad: string): Uint8Array => {
    const aadBytes = utf8(aad);
    const dek = randomBytes(KEY_LENGTH);
    const out = new Uint8Array(header.length + WRAPPED_LENGTH + NONCE_LENGTH + plaintext.length + TAG_LENGTH);
    out.set(header, 0);
    try {
      const at = gcmSealInto(currentKey, dek, concatBytes(dekAadPrefix, aadBytes), out, header.length);
      gcmSealInto(dek, plaintext, concatBytes(dataAadPrefix, aadBytes), out, at);
      return out;
    } finally {
      dek.fill(0);
    }
  };

  return Object.freeze({
    currentKid,
    kids: Object.freeze([...keks.keys()]),
    sealAtRest: seal,
    openAtRest: open,
    rewrap: (sealed: Uint8Array, aad: string) => seal(open(sealed, aad), aad),
    needsRewrap: (sealed: Uint8Array) => parseEnvelope(sealed).kid !== currentKid,
  });
}

/**
 * The server's keyring from its configuration:
 * - current KEK: `masterKey` (HANDSAFE_MASTER_KEY) when given, else `<dataDir>/master.key`
 *   (32 raw bytes, created with mode 0600 on first start);
 * - previous KEKs: every `<dataDir>/master.key.<kid>` file, `previousKeys`
 *   (HANDSAFE_MASTER_KEY_PREVIOUS) and, when masterKey is given, an existing master.key.
 * Key files readable by group or others are refused.
 */
export function loadKeyring(opts: {
  dataDir: string;
  masterKey?: Uint8Array | null;
  previousKeys?: readonly Uint8Array[];
}): Keyring {
  const previous: Uint8Array[] = [...(opts.previousKeys ?? [])];
  const mainPath = join(opts.dataDir, MASTER_KEY_FILE);
  let current: Uint8Array;
  if (opts.masterKey) {
    current = opts.masterKey;
    const existing = readKeyFileIfPresent(mainPath);
    if (existing) previous.push(existing);
  } else {
    current = readKeyFileIfPresent(mainPath) ?? createKeyFile(opts.dataDir, mainPath);
  }
  let names: string[] = [];
  try {
    names = readdirSync(opts.dataDir);
  } catch {
    names = [];
  }
  for (const name of names.sort()) {
    const match = /^master\.key\.([0-9a-f]{8})$/.exec(name);
    if (!match) continue;
    const key = readKeyFileIfPresent(join(opts.dataDir, name))!;
    if (kekId(key) !== match[1])
      throw new HandsafeError(
        "keyring.invalid_key_file",
        `${name}: its key id is ${kekId(key)}, not ${match[1]}`,
        {
          status: 500,
        },
      );
    previous.push(key);
  }
  return createKeyring(current, previous);
}

/** loadKeyring with the settings from loadConfig(). */
export function keyringFromConfig(
  config: Pick<Config, "dataDir" | "masterKey" | "previousMasterKeys">,
): Keyring {
  return loadKeyring({
    dataDir: config.dataDir,
    masterKey: config.masterKey?.reveal() ?? null,
    previousKeys: config.previousMasterKeys.map((k) => k.reveal()),
  });
}

function readKeyFileIfPresent(path: string): Uint8Array | undefined {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new HandsafeError("keyring.invalid_key_file", `cannot read ${path}`, { status: 500, cause: e });
  }
  if (process.platform !== "win32" && (mode & 0o077) !== 0)
    throw new HandsafeError(
      "keyring.insecure_key_file",
      `${path} is readable by group or others (mode ${(mode & 0o777).toString(8)}): chmod 600 it`,
      { status: 500 },
    );
  const bytes = new Uint8Array(readFileSync(path));
  if (bytes.length !== KEY_LENGTH)
    throw new HandsafeError("keyring.invalid_key_file", `${path} must hold exactly ${KEY_LENGTH} bytes`, {
      status: 500,
    });
  return bytes;
}

/**
 * Creates the key file atomically: written and fsynced under a temporary name, then hard-linked
 * into place, so a second node starting on the same folder either wins or reads the complete
 * winner — never a half-written key.
 */
function createKeyFile(dir: string, path: string): Uint8Array {
  const key = randomBytes(KEY_LENGTH);
  const tmp = `${path}.tmp-${toHex(randomBytes(6))}`;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const fd = openSync(tmp, "wx", 0o600);
    try {
      writeSync(fd, key);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") return readKeyFileIfPresent(path)!;
      throw e;
    }
    try {
      const dirFd = openSync(dir, "r");
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
    } catch {
      // Directory fsync is not supported everywhere; the link itself is already durable on ext4/xfs.
    }
    return key;
  } catch (e) {
    if (e instanceof HandsafeError) throw e;
    throw new HandsafeError("keyring.invalid_key_file", `cannot create ${path}`, { status: 500, cause: e });
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
  }
}

interface Envelope {
  kid: string;
  header: Uint8Array;
  wrapped: Uint8Array;
  body: Uint8Array;
}

function parseEnvelope(sealed: Uint8Array): Envelope {
  if (!(sealed instanceof Uint8Array) || sealed.length < 2) throw decryptFailed("too short");
  if (sealed[0] !== AT_REST_VERSION) throw decryptFailed(`unknown envelope version ${sealed[0]}`);
  const kidLength = sealed[1]!;
  const headerLength = 2 + kidLength;
  if (kidLength === 0 || sealed.length < headerLength + WRAPPED_LENGTH + NONCE_LENGTH + TAG_LENGTH)
    throw decryptFailed("truncated");
  const kidBytes = sealed.subarray(2, headerLength);
  for (const b of kidBytes)
    if (!((b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66))) throw decryptFailed("bad key id");
  return {
    kid: String.fromCharCode(...kidBytes),
    header: sealed.subarray(0, headerLength),
    wrapped: sealed.subarray(headerLength, headerLength + WRAPPED_LENGTH),
    body: sealed.subarray(headerLength + WRAPPED_LENGTH),
  };
}

function labelled(label: string, header: Uint8Array, aad: Uint8Array): Uint8Array {
  return concatBytes(utf8(label), Uint8Array.of(0), header, aad);
}

/** Writes nonce (12) || ciphertext || tag (16) into `out` at `at`; returns where it ended. */
function gcmSealInto(
  key: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
  out: Uint8Array,
  at: number,
): number {
  const nonce = randomBytes(NONCE_LENGTH);
  out.set(nonce, at);
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_LENGTH });
  cipher.setAAD(aad);
  let end = at + NONCE_LENGTH;
  for (const part of [cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]) {
    out.set(part, end);
    end += part.length;
  }
  return end;
}

function gcmOpen(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array {
  if (sealed.length < NONCE_LENGTH + TAG_LENGTH) throw decryptFailed("truncated");
  const nonce = sealed.subarray(0, NONCE_LENGTH);
  const ct = sealed.subarray(NONCE_LENGTH, sealed.length - TAG_LENGTH);
  const tag = sealed.subarray(sealed.length - TAG_LENGTH);
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_LENGTH });
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    return concatBytes(decipher.update(ct), decipher.final());
  } catch {
    throw decryptFailed("authentication failed (tampered, wrong record or wrong key)");
  }
}

function decryptFailed(why: string): HandsafeError {
  return new HandsafeError("storage.decrypt_failed", `cannot open sealed record: ${why}`, { status: 500 });
}
