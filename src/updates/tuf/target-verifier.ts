import { toHex } from "../../core/codec/bytes.ts";
import { createHash } from "../../core/crypto/hash.ts";
import { tufError } from "./errors.ts";
import { checkHashes, type TargetFile } from "./metadata.ts";

/**
 * Checking a target's bytes against its targets metadata (spec §5.7.3): the length first, so no
 * more than `length` bytes are ever hashed or kept, then every supported hash.
 */

function hasControlOrBackslash(segment: string): boolean {
  for (let i = 0; i < segment.length; i++) {
    const c = segment.charCodeAt(i);
    if (c < 0x20 || c === 0x7f || c === 0x5c) return true;
  }
  return false;
}

/** Target paths are "/"-separated, relative, with no empty, "." or ".." segment (they name files). */
export function checkTargetPath(path: string): void {
  if (typeof path !== "string" || path.length === 0 || path.length > 1024)
    throw tufError("tuf.bad_request", "bad target path");
  for (const segment of path.split("/"))
    if (segment === "" || segment === "." || segment === ".." || hasControlOrBackslash(segment))
      throw tufError("tuf.bad_request", `bad target path ${JSON.stringify(path)}`);
}

/**
 * §5.7.3 with consistent snapshots: "<dir>/<sha256>.<basename>" — the digest goes before the file's
 * own name and any folders stay (what tuf-js asks for).
 */
export function targetFileName(path: string, sha256Hex: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0
    ? `${sha256Hex}.${path}`
    : `${path.slice(0, slash + 1)}${sha256Hex}.${path.slice(slash + 1)}`;
}

export function verifyTarget(file: TargetFile, bytes: Uint8Array): void {
  if (bytes.length !== file.length)
    throw tufError("tuf.length_mismatch", `target is ${bytes.length} bytes, metadata says ${file.length}`);
  checkHashes(bytes, file.hashes, "target");
}

export interface TargetVerifier {
  /** Bytes accepted so far. */
  readonly received: number;
  /** Throws tuf.length_mismatch as soon as more than `length` bytes have arrived (endless data). */
  update(chunk: Uint8Array): void;
  /** Throws tuf.length_mismatch (short) or tuf.hash_mismatch; only a return means the bytes are good. */
  finish(): void;
}

/**
 * The streaming form, for images too large to hold (a 256 MiB firmware): feed chunks as they
 * arrive, write them to a temporary place, and use them only once finish() returns.
 * The incremental hash is core/crypto's: native on Node, @noble/hashes in a browser.
 */
export function createTargetVerifier(file: TargetFile): TargetVerifier {
  const expected = Object.entries(file.hashes).filter(([name]) => name === "sha256" || name === "sha512");
  if (expected.length === 0) throw tufError("tuf.bad_metadata", "target: no supported hash algorithm");
  const hashers = expected.map(([name, digest]) => ({
    name,
    digest,
    state: createHash(name as "sha256" | "sha512"),
  }));
  let received = 0;
  let state: "open" | "failed" | "done" = "open";
  const fail = (code: "tuf.length_mismatch" | "tuf.hash_mismatch", message: string) => {
    state = "failed";
    return tufError(code, message);
  };
  const assertOpen = () => {
    if (state !== "open") throw tufError("tuf.bad_state", `the target verifier is ${state}`);
  };
  return {
    get received() {
      return received;
    },
    update(chunk) {
      assertOpen();
      if (received + chunk.length > file.length)
        throw fail("tuf.length_mismatch", `target exceeds its ${file.length} bytes`);
      received += chunk.length;
      for (const h of hashers) h.state.update(chunk);
    },
    finish() {
      assertOpen();
      if (received !== file.length)
        throw fail("tuf.length_mismatch", `target is ${received} bytes, metadata says ${file.length}`);
      for (const h of hashers)
        if (toHex(h.state.digest()) !== h.digest)
          throw fail("tuf.hash_mismatch", `target: ${h.name} does not match`);
      state = "done";
    },
  };
}
