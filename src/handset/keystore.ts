/**
 * The handset's keystore: named secrets as bytes. Names are plain strings chosen by the capability that
 * owns the secret (e.g. "activation/<serviceUid>/key"); `list(prefix)` finds a capability's entries.
 *
 * Two implementations: `MemoryKeystore` here (browser and tests — this module imports nothing from node)
 * and `FolderKeystore` in folder-keystore.ts (Node: a passphrase-encrypted folder).
 */

import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";

export interface Keystore {
  /** The entry's bytes (a fresh copy), or undefined when there is no such entry. */
  get(name: string): Promise<Uint8Array | undefined>;
  /** Creates or replaces the entry. */
  put(name: string, value: Uint8Array): Promise<void>;
  /** Removes the entry; removing a missing entry is not an error. */
  delete(name: string): Promise<void>;
  /** Names of the entries that start with `prefix` (all when omitted), sorted. */
  list(prefix?: string): Promise<string[]>;
}

/**
 * Longest entry name, in UTF-8 bytes. FolderKeystore stores a name hex-encoded in a file name, and file
 * names are limited to 255 bytes on common file systems: 2 × 120 + ".entry" fits.
 */
export const MAX_ENTRY_NAME_BYTES = 120;

/** Checks an entry name at the keystore's boundary: non-empty, well-formed, at most 120 UTF-8 bytes. */
export function checkEntryName(name: string): void {
  if (typeof name !== "string" || name.length === 0)
    throw new HandsafeError("keystore.invalid_name", "an entry name must be a non-empty string");
  const bytes = utf8(name);
  // A lone surrogate would encode as U+FFFD and two names would share one stored entry.
  if (fromUtf8(bytes) !== name)
    throw new HandsafeError("keystore.invalid_name", "an entry name must be well-formed Unicode");
  if (bytes.length > MAX_ENTRY_NAME_BYTES)
    throw new HandsafeError(
      "keystore.invalid_name",
      `an entry name must be at most ${MAX_ENTRY_NAME_BYTES} bytes`,
    );
}

export function checkEntryValue(value: Uint8Array): void {
  if (!(value instanceof Uint8Array))
    throw new HandsafeError("keystore.invalid_value", "an entry value must be a Uint8Array");
}

/** Keeps entries in memory only; values are copied in and out so callers cannot alter what is stored. */
export class MemoryKeystore implements Keystore {
  readonly #entries = new Map<string, Uint8Array>();

  async get(name: string): Promise<Uint8Array | undefined> {
    checkEntryName(name);
    const value = this.#entries.get(name);
    return value === undefined ? undefined : value.slice();
  }

  async put(name: string, value: Uint8Array): Promise<void> {
    checkEntryName(name);
    checkEntryValue(value);
    this.#entries.set(name, value.slice());
  }

  async delete(name: string): Promise<void> {
    checkEntryName(name);
    this.#entries.delete(name);
  }

  async list(prefix = ""): Promise<string[]> {
    return [...this.#entries.keys()].filter((n) => n.startsWith(prefix)).sort();
  }

  /** Never serialise secrets by accident. */
  toJSON(): { keystore: "memory"; entries: number } {
    return { keystore: "memory", entries: this.#entries.size };
  }
}
