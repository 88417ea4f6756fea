/**
 * Password hashing with scrypt (RFC 7914) on node:crypto, run in libuv's thread pool so it does
 * not block the event loop. Stored as `scrypt$<logN>$<r>$<p>$<salt>$<hash>` (base64url), so the
 * parameters can be raised later without breaking old hashes.
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { fromBase64url, toBase64url } from "../../core/codec/base64url.ts";
import { HandsafeError } from "../../core/errors.ts";

const LOG_N = 15;
const R = 8;
const P = 1;
const KEY_BYTES = 32;
// 128 * N * r bytes of memory: 32 MiB at logN 15; allow headroom for stronger stored parameters.
const MAX_MEMORY = 256 * 1024 * 1024;

function derive(password: string, salt: Uint8Array, logN: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(
      password.normalize("NFC"),
      salt,
      KEY_BYTES,
      { N: 2 ** logN, r, p, maxmem: MAX_MEMORY },
      (err, key) => (err ? reject(err) : resolve(key)),
    ),
  );
}

export async function hashPassword(password: string): Promise<string> {
  if (password.length < 8)
    throw new HandsafeError("auth.weak_password", "a password needs at least 8 characters");
  if (password.length > 1024)
    throw new HandsafeError("auth.weak_password", "a password is at most 1024 characters");
  const salt = randomBytes(16);
  const hash = await derive(password, salt, LOG_N, R, P);
  return `scrypt$${LOG_N}$${R}$${P}$${toBase64url(salt)}$${toBase64url(hash)}`;
}

/** Constant-time check. A malformed stored hash never verifies. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") return false;
  const [logN, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  if (![logN, r, p].every(Number.isSafeInteger) || logN < 10 || logN > 20) return false;
  const expected = fromBase64url(parts[5]!);
  const actual = await derive(password.slice(0, 1024), fromBase64url(parts[4]!), logN, r, p);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/** A hash of a random password: verifying against it costs the same as against a real user. */
let dummyHash: Promise<string> | undefined;
export function dummyPasswordHash(): Promise<string> {
  dummyHash ??= hashPassword(toBase64url(randomBytes(18)));
  return dummyHash;
}
