/**
 * A keystore in a folder, encrypted under a passphrase (Node only; the simulated handsets of the CLI).
 *
 * Layout, version 1:
 *
 *   keystore.json     {"format":"handsafe-keystore","version":1,
 *                      "kdf":{"name":"scrypt","N":32768,"r":8,"p":1,"salt":"<b64url, 16 random bytes>"},
 *                      "keyCheck":"<b64url: nonce(12) || GCM tag(16)>"}
 *   <hex>.entry       one file per entry; <hex> is the lowercase hex of the entry name's UTF-8 bytes (safe
 *                     in any file name, and case-insensitive file systems cannot merge two names)
 *
 *   key       = scrypt(UTF-8(NFC(passphrase)), salt, N, r, p, dkLen 32)   (RFC 7914)
 *   keyCheck  = AES-256-GCM(key, nonce, plaintext "", aad "handsafe/v1/keystore-check")
 *   entry     = 0x01 || nonce(12, random) || AES-256-GCM(key, nonce, value, aad "handsafe/v1/keystore/" + name)
 *
 * The entry name in the associated data binds each file to its name: renaming or swapping files fails
 * authentication ("keystore.corrupt"). The key-check aad lacks the "/" so it can never equal an entry's.
 * The KDF parameters live in keystore.json so a later version can raise them.
 *
 * Not covered: an attacker who can write the folder can delete an entry or put back an older copy of the
 * same entry (rollback); one process at a time should use a folder.
 */

import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  type KeyObject,
  randomBytes,
  scrypt as scryptCallback,
} from "node:crypto";
import { mkdir, open, readdir, readFile, rename, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, fromHex, fromUtf8, toHex, utf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";
import { syncFolder } from "./durable-fs.ts";
import { checkEntryName, checkEntryValue, type Keystore } from "./keystore.ts";

export const KEYSTORE_FORMAT = "handsafe-keystore";
export const KEYSTORE_VERSION = 1;
const HEADER_FILE = "keystore.json";
const ENTRY_SUFFIX = ".entry";
const ENTRY_VERSION = 0x01;
const ENTRY_AAD_PREFIX = "handsafe/v1/keystore/";
const KEY_CHECK_AAD = "handsafe/v1/keystore-check";
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/** Today's cost: N=2^15, r=8, p=1 — 32 MiB and roughly 100 ms per open. */
export const DEFAULT_SCRYPT: ScryptParams = { N: 2 ** 15, r: 8, p: 1 };
const SALT_BYTES = 16;
/** Parameters read from a file are bounded so a planted keystore.json cannot exhaust memory. */
const MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024;

interface Header {
  format: typeof KEYSTORE_FORMAT;
  version: typeof KEYSTORE_VERSION;
  kdf: { name: "scrypt"; N: number; r: number; p: number; salt: string };
  keyCheck: string;
}

export class FolderKeystore implements Keystore {
  readonly dir: string;
  readonly #key: KeyObject;

  private constructor(dir: string, key: KeyObject) {
    this.dir = dir;
    this.#key = key;
  }

  /**
   * Opens the keystore in `dir`, creating it when the folder is missing or empty. `scrypt` sets the cost
   * of a new keystore only (tests lower it); an existing one uses the parameters in its keystore.json.
   *
   * Errors: keystore.wrong_passphrase, keystore.not_a_keystore (the folder holds something else),
   * keystore.unsupported_version, keystore.corrupt (keystore.json unreadable), keystore.invalid_passphrase.
   */
  static async open(
    dir: string,
    passphrase: string,
    options: { scrypt?: ScryptParams } = {},
  ): Promise<FolderKeystore> {
    if (typeof passphrase !== "string" || passphrase.length === 0)
      throw new HandsafeError("keystore.invalid_passphrase", "the keystore passphrase must not be empty");
    const secret = utf8(passphrase.normalize("NFC"));
    const header = await readHeader(dir);
    if (header === undefined)
      return await FolderKeystore.#create(dir, secret, options.scrypt ?? DEFAULT_SCRYPT);

    const key = await deriveKey(secret, fromBase64url(header.kdf.salt), header.kdf);
    let check: Uint8Array;
    try {
      check = fromBase64url(header.keyCheck);
    } catch {
      throw corrupt(`${HEADER_FILE} has a malformed keyCheck`);
    }
    if (unseal(key, check, utf8(KEY_CHECK_AAD)) === undefined)
      throw new HandsafeError("keystore.wrong_passphrase", "wrong passphrase for this keystore", {
        status: 401,
      });
    return new FolderKeystore(dir, key);
  }

  static async #create(dir: string, secret: Uint8Array, params: ScryptParams): Promise<FolderKeystore> {
    checkScryptParams(params);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const salt = randomBytes(SALT_BYTES);
    const key = await deriveKey(secret, salt, params);
    const header: Header = {
      format: KEYSTORE_FORMAT,
      version: KEYSTORE_VERSION,
      kdf: { name: "scrypt", N: params.N, r: params.r, p: params.p, salt: toBase64url(salt) },
      keyCheck: toBase64url(seal(key, new Uint8Array(0), utf8(KEY_CHECK_AAD))),
    };
    await writeFileAtomic(dir, HEADER_FILE, utf8(`${JSON.stringify(header, null, 2)}\n`));
    return new FolderKeystore(dir, key);
  }

  async get(name: string): Promise<Uint8Array | undefined> {
    checkEntryName(name);
    let file: Uint8Array;
    try {
      file = await readFile(join(this.dir, entryFileName(name)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
    if (file.length < 1 + NONCE_BYTES + TAG_BYTES || file[0] !== ENTRY_VERSION)
      throw corrupt(`entry ${JSON.stringify(name)} is malformed`);
    const value = unseal(this.#key, file.subarray(1), entryAad(name));
    if (value === undefined) throw corrupt(`entry ${JSON.stringify(name)} failed authentication`);
    return value;
  }

  async put(name: string, value: Uint8Array): Promise<void> {
    checkEntryName(name);
    checkEntryValue(value);
    const file = concatBytes(Uint8Array.of(ENTRY_VERSION), seal(this.#key, value, entryAad(name)));
    await writeFileAtomic(this.dir, entryFileName(name), file);
  }

  async delete(name: string): Promise<void> {
    checkEntryName(name);
    try {
      await unlink(join(this.dir, entryFileName(name)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }

  async list(prefix = ""): Promise<string[]> {
    const names: string[] = [];
    for (const file of await readdir(this.dir)) {
      const name = entryNameOfFile(file);
      if (name?.startsWith(prefix)) names.push(name);
    }
    return names.sort();
  }

  /** Never serialise the key by accident. */
  toJSON(): { keystore: "folder"; dir: string } {
    return { keystore: "folder", dir: this.dir };
  }
}

function corrupt(message: string): HandsafeError {
  return new HandsafeError("keystore.corrupt", message, { status: 500 });
}

function entryAad(name: string): Uint8Array {
  return utf8(ENTRY_AAD_PREFIX + name);
}

function entryFileName(name: string): string {
  return toHex(utf8(name)) + ENTRY_SUFFIX;
}

/** The entry name a file stands for, or undefined for files that are not canonical entries. */
function entryNameOfFile(file: string): string | undefined {
  if (!file.endsWith(ENTRY_SUFFIX)) return undefined;
  const hex = file.slice(0, -ENTRY_SUFFIX.length);
  if (!/^(?:[0-9a-f]{2})+$/.test(hex)) return undefined;
  try {
    const name = fromUtf8(fromHex(hex));
    checkEntryName(name);
    return name;
  } catch {
    return undefined;
  }
}

/** Reads and checks keystore.json; undefined when the folder is missing or empty (a new keystore). */
async function readHeader(dir: string): Promise<Header | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, HEADER_FILE), "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTDIR")
      throw new HandsafeError("keystore.not_a_keystore", `${dir} is not a folder`, { status: 500 });
    if (code !== "ENOENT") throw e;
    const info = await stat(dir).catch(() => undefined);
    if (info === undefined) return undefined;
    if (!info.isDirectory())
      throw new HandsafeError("keystore.not_a_keystore", `${dir} is not a folder`, { status: 500 });
    if ((await readdir(dir)).length === 0) return undefined;
    throw new HandsafeError(
      "keystore.not_a_keystore",
      `${dir} is not empty and holds no ${HEADER_FILE}: refusing to make a keystore there`,
      { status: 500 },
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch {
    throw corrupt(`${HEADER_FILE} is not JSON`);
  }
  if (!isRecord(header) || header["format"] !== KEYSTORE_FORMAT)
    throw new HandsafeError("keystore.not_a_keystore", `${dir}/${HEADER_FILE} is not a handsafe keystore`, {
      status: 500,
    });
  if (header["version"] !== KEYSTORE_VERSION)
    throw new HandsafeError(
      "keystore.unsupported_version",
      `${dir} holds a keystore of version ${JSON.stringify(header["version"])}; this build reads version ${KEYSTORE_VERSION}`,
      { status: 500 },
    );
  const kdf = header["kdf"];
  if (
    !isRecord(kdf) ||
    kdf["name"] !== "scrypt" ||
    typeof kdf["salt"] !== "string" ||
    typeof header["keyCheck"] !== "string"
  )
    throw corrupt(`${HEADER_FILE} lacks its kdf or keyCheck`);
  const params = { N: kdf["N"], r: kdf["r"], p: kdf["p"] } as ScryptParams;
  try {
    checkScryptParams(params);
  } catch (e) {
    throw corrupt(`${HEADER_FILE}: ${(e as Error).message}`);
  }
  let salt: Uint8Array;
  try {
    salt = fromBase64url(kdf["salt"]);
  } catch {
    throw corrupt(`${HEADER_FILE} has a malformed salt`);
  }
  if (salt.length < SALT_BYTES || salt.length > 64)
    throw corrupt(`${HEADER_FILE} has a salt of a bad length`);
  return {
    format: KEYSTORE_FORMAT,
    version: KEYSTORE_VERSION,
    kdf: { name: "scrypt", ...params, salt: kdf["salt"] },
    keyCheck: header["keyCheck"],
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkScryptParams({ N, r, p }: ScryptParams): void {
  const int = (v: unknown, lo: number, hi: number) =>
    Number.isSafeInteger(v) && (v as number) >= lo && (v as number) <= hi;
  // RFC 7914 §2: N a power of two greater than 1; here at least 2^14 so nobody stores a trivial cost.
  if (!int(N, 2 ** 14, 2 ** 24) || (N & (N - 1)) !== 0)
    throw new HandsafeError("keystore.invalid_kdf", "scrypt N must be a power of two in [2^14, 2^24]");
  if (!int(r, 1, 64) || !int(p, 1, 16))
    throw new HandsafeError("keystore.invalid_kdf", "scrypt r must be in [1, 64] and p in [1, 16]");
  if (128 * N * r > MAX_SCRYPT_MEMORY)
    throw new HandsafeError("keystore.invalid_kdf", "scrypt parameters need more than 1 GiB of memory");
}

function deriveKey(secret: Uint8Array, salt: Uint8Array, { N, r, p }: ScryptParams): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    // node's scrypt refuses by default above 32 MiB; 128·N·r is what it needs, plus slack.
    const maxmem = 128 * N * r + 16 * 1024 * 1024;
    scryptCallback(secret, salt, KEY_BYTES, { N, r, p, maxmem }, (err, key) => {
      if (err) reject(err);
      else resolve(createSecretKey(key));
    });
  });
}

/** nonce(12) || ciphertext || tag(16) */
function seal(key: KeyObject, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const body = concatBytes(cipher.update(plaintext), cipher.final());
  return concatBytes(nonce, body, cipher.getAuthTag());
}

/** The plaintext, or undefined when authentication fails. */
function unseal(key: KeyObject, sealed: Uint8Array, aad: Uint8Array): Uint8Array | undefined {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) return undefined;
  const nonce = sealed.subarray(0, NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const body = sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    return concatBytes(decipher.update(body), decipher.final());
  } catch {
    return undefined;
  }
}

/** Write to a temporary file in the same folder, fsync, then rename over the target: all or nothing. */
async function writeFileAtomic(dir: string, file: string, data: Uint8Array): Promise<void> {
  const tmp = join(dir, `.${randomBytes(8).toString("hex")}.tmp`);
  const handle = await open(tmp, "wx", 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (e) {
    await handle.close();
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await handle.close();
  try {
    await rename(tmp, join(dir, file));
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  // Make the rename itself durable.
  await syncFolder(dir);
}
