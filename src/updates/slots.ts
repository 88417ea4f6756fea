/**
 * The simulated A/B layout (docs/protocols/updates-contract.md §Handset): two slots, one active.
 * The updater writes the inactive slot, marks it pending, switches to it and runs a health check;
 * on failure it switches back. A real device maps this interface onto its partitions and its
 * bootloader's "try once" flag; this module holds the browser/test store, slots-folder.ts the
 * Node folder-backed one. No node:* imports here (the SDK runs in browsers too).
 *
 * Simulation hook: an image whose first bytes are "HSFAIL" fails its health check. That is how
 * the simulator (demo, tests) makes a device fail after an update; a real device passes its own
 * check as `healthCheck` and the hook does not apply.
 */
import { toHex, utf8 } from "../core/codec/bytes.ts";
import { createHash } from "../core/crypto/hash.ts";
import { HandsafeError } from "../core/errors.ts";

export type SlotName = "a" | "b";
export const SLOT_NAMES: readonly SlotName[] = ["a", "b"];

/** What a slot holds: the image's version, hex SHA-256 and length, recorded when it was written. */
export interface SlotMeta {
  version: string;
  sha256: string;
  length: number;
}

/** The boot state: which slot runs, and which one (if any) is on trial after a switch. */
export interface SlotState {
  active: SlotName;
  pending: SlotName | null;
  slots: Partial<Record<SlotName, SlotMeta>>;
}

export interface SlotWriter {
  write(chunk: Uint8Array): Promise<void>;
  /** Makes the written image the slot's content, all at once; returns what was recorded. */
  commit(): Promise<SlotMeta>;
  /** Drops what was written; the slot keeps its old image. */
  abort(): Promise<void>;
}

/** A device-specific check of a freshly switched slot (boots, services up, radio registers…). */
export type HealthCheck = (slot: SlotName, store: SlotStore) => Promise<boolean>;

export interface SlotStore {
  active(): Promise<SlotName>;
  /** The slot on trial (switched to, not yet confirmed), if any. */
  pending(): Promise<SlotName | null>;
  read(slot: SlotName): AsyncIterable<Uint8Array>;
  /** Refuses the active slot (updates.slot_active): the running image is never overwritten. */
  openWriter(slot: SlotName, info: { version: string }): Promise<SlotWriter>;
  meta(slot: SlotName): Promise<SlotMeta | undefined>;
  /** Marks a written slot as the one to try next. */
  setPending(slot: SlotName): Promise<void>;
  /** Makes `slot` active. Switching back to the other slot clears the trial. */
  switchTo(slot: SlotName): Promise<void>;
  /** Ends the trial: the pending slot, now active, is kept. */
  confirm(slot: SlotName): Promise<void>;
  healthCheck(slot: SlotName): Promise<boolean>;
}

export const FAIL_MARKER = utf8("HSFAIL");

export function otherSlot(slot: SlotName): SlotName {
  return slot === "a" ? "b" : "a";
}

export function checkSlotName(slot: unknown): asserts slot is SlotName {
  if (slot !== "a" && slot !== "b") throw new HandsafeError("updates.slot_invalid", "a slot is 'a' or 'b'");
}

/**
 * The simulator's health check: the image must hash to its recorded SHA-256 and length (the write
 * was not torn or altered), and must not start with "HSFAIL" (the simulated failing device).
 */
export async function simulatedHealthCheck(slot: SlotName, store: SlotStore): Promise<boolean> {
  const meta = await store.meta(slot);
  if (!meta) return false;
  const hash = createHash("sha256");
  let length = 0;
  const head: number[] = [];
  for await (const chunk of store.read(slot)) {
    for (let i = 0; head.length < FAIL_MARKER.length && i < chunk.length; i++) head.push(chunk[i]!);
    hash.update(chunk);
    length += chunk.length;
  }
  if (length !== meta.length || toHex(hash.digest()) !== meta.sha256) return false;
  return !(head.length === FAIL_MARKER.length && head.every((b, i) => b === FAIL_MARKER[i]));
}

/** The state-machine rules both stores share; each store only persists the result. */
export const slotRules = {
  openWriter(state: SlotState, slot: SlotName): void {
    checkSlotName(slot);
    if (slot === state.active)
      throw new HandsafeError("updates.slot_active", `slot ${slot} is running: write the other one`, {
        status: 409,
      });
  },
  setPending(state: SlotState, slot: SlotName): SlotState {
    checkSlotName(slot);
    if (slot === state.active)
      throw new HandsafeError("updates.slot_active", `slot ${slot} is already running`, { status: 409 });
    if (!state.slots[slot])
      throw new HandsafeError("updates.slot_empty", `slot ${slot} holds no image`, { status: 409 });
    return { ...state, pending: slot };
  },
  switchTo(state: SlotState, slot: SlotName): SlotState {
    checkSlotName(slot);
    if (!state.slots[slot])
      throw new HandsafeError("updates.slot_empty", `slot ${slot} holds no image`, { status: 409 });
    if (slot === state.active) return state;
    // Switching to the pending slot starts its trial; switching away from a slot on trial is the
    // rollback and ends it. Any other switch skipped setPending.
    if (slot === state.pending) return { ...state, active: slot };
    if (state.pending !== null && state.pending === state.active)
      return { ...state, active: slot, pending: null };
    throw new HandsafeError("updates.slot_not_pending", `slot ${slot} was not marked pending`, {
      status: 409,
    });
  },
  confirm(state: SlotState, slot: SlotName): SlotState {
    checkSlotName(slot);
    if (state.active !== slot || state.pending !== slot)
      throw new HandsafeError("updates.slot_not_pending", `slot ${slot} is not on trial`, { status: 409 });
    return { ...state, pending: null };
  },
};

/** Tracks the SHA-256 and length of what a writer is given. */
export class ImageDigest {
  readonly #hash = createHash("sha256");
  length = 0;
  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.length += chunk.length;
  }
  hex(): string {
    return toHex(this.#hash.digest());
  }
}

export interface InitialImage {
  version: string;
  image: Uint8Array;
}

/** Slots in memory: the browser's virtual handset and the tests. */
export class MemorySlotStore implements SlotStore {
  #state: SlotState;
  readonly #images = new Map<SlotName, Uint8Array>();
  readonly #check: HealthCheck;

  /** `a` (active) and optionally `b` start with these images; `healthCheck` replaces the simulator's. */
  constructor(initial: { a: InitialImage; b?: InitialImage; healthCheck?: HealthCheck }) {
    this.#state = { active: "a", pending: null, slots: {} };
    for (const slot of SLOT_NAMES) {
      const img = initial[slot];
      if (!img) continue;
      const d = new ImageDigest();
      d.update(img.image);
      this.#images.set(slot, img.image.slice());
      this.#state.slots[slot] = { version: img.version, sha256: d.hex(), length: d.length };
    }
    this.#check = initial.healthCheck ?? simulatedHealthCheck;
  }

  async active(): Promise<SlotName> {
    return this.#state.active;
  }

  async pending(): Promise<SlotName | null> {
    return this.#state.pending;
  }

  async *read(slot: SlotName): AsyncIterable<Uint8Array> {
    checkSlotName(slot);
    const image = this.#images.get(slot);
    if (!image) throw new HandsafeError("updates.slot_empty", `slot ${slot} holds no image`, { status: 409 });
    const step = 64 * 1024;
    for (let at = 0; at < image.length; at += step) yield image.slice(at, at + step);
  }

  async openWriter(slot: SlotName, info: { version: string }): Promise<SlotWriter> {
    slotRules.openWriter(this.#state, slot);
    const parts: Uint8Array[] = [];
    const digest = new ImageDigest();
    let open = true;
    const assertOpen = () => {
      if (!open) throw new HandsafeError("updates.slot_writer_closed", "this slot writer is closed");
    };
    return {
      write: async (chunk) => {
        assertOpen();
        parts.push(chunk.slice());
        digest.update(chunk);
      },
      commit: async () => {
        assertOpen();
        open = false;
        slotRules.openWriter(this.#state, slot);
        const image = new Uint8Array(digest.length);
        let at = 0;
        for (const p of parts) {
          image.set(p, at);
          at += p.length;
        }
        const meta = { version: info.version, sha256: digest.hex(), length: digest.length };
        this.#images.set(slot, image);
        this.#state = { ...this.#state, slots: { ...this.#state.slots, [slot]: meta } };
        return meta;
      },
      abort: async () => {
        open = false;
        parts.length = 0;
      },
    };
  }

  async meta(slot: SlotName): Promise<SlotMeta | undefined> {
    checkSlotName(slot);
    const m = this.#state.slots[slot];
    return m ? { ...m } : undefined;
  }

  async setPending(slot: SlotName): Promise<void> {
    this.#state = slotRules.setPending(this.#state, slot);
  }

  async switchTo(slot: SlotName): Promise<void> {
    this.#state = slotRules.switchTo(this.#state, slot);
  }

  async confirm(slot: SlotName): Promise<void> {
    this.#state = slotRules.confirm(this.#state, slot);
  }

  healthCheck(slot: SlotName): Promise<boolean> {
    checkSlotName(slot);
    return this.#check(slot, this);
  }

  /** Test hook: change a slot's bytes behind the store's back (a torn or altered write). */
  corrupt(slot: SlotName, image: Uint8Array): void {
    this.#images.set(slot, image.slice());
  }
}
