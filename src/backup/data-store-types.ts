/**
 * The handset's data as backup sees it (docs/protocols/backup.md §2), as types: what the SDK reads
 * items from and restores them into. Types only, so the browser SDK needs no Node store;
 * data-stores.ts holds the folder implementation (Node).
 */
import type { ItemKind } from "./protocol.ts";

export interface StoredItem {
  /** `contacts/<id>`, `files/<relative path>`, `appdata/<app>/<relative path>`. */
  readonly path: string;
  readonly kind: ItemKind;
  /** Plaintext bytes. */
  readonly size: number;
  /** ISO 8601. */
  readonly modifiedAt: string;
  readonly contentType?: string;
  /** The plaintext, streamed. */
  open(): AsyncIterable<Uint8Array>;
}

export interface StagingWriter {
  /** Writes one item (streamed) into the staging area. */
  write(path: string, data: AsyncIterable<Uint8Array>, meta?: { modifiedAt?: string }): Promise<void>;
  /** Replaces the stores with the staged state in one step. */
  commit(): Promise<void>;
  /** Drops the staged state; the stores stay as they were. */
  abort(): Promise<void>;
}

export interface DataStores {
  /** Every item, sorted by path. */
  list(): Promise<StoredItem[]>;
  /**
   * A staging writer over a copy of the current state. The stores named in `replace` start empty
   * (a snapshot restore: what is not written is gone after commit); the others keep their items and
   * the written ones overwrite them (single items).
   */
  stage(options?: { replace?: readonly ItemKind[] }): Promise<StagingWriter>;
}
