/**
 * The updater's Node-side pieces (the browser uses slots.ts / download.ts alone):
 * - FolderSlotStore: the simulated A/B layout in a folder — a.img, b.img and slots.json;
 * - FolderPartialStore: an unfinished download in a folder — partial.bin and partial.json;
 * (streaming downloads come from createNodeTransport's `stream`, handset/node-transport.ts).
 *
 * Every file is replaced atomically: written to a temporary name, flushed, renamed over the old
 * one, the folder flushed. A slot's image is committed in three steps — forget its meta, rename the
 * new image in, record the new meta — so a crash in between leaves a slot with no meta (empty, not
 * bootable) and never a slot whose meta vouches for other bytes.
 */
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { HandsafeError } from "../core/errors.ts";
import { syncFolder } from "../handset/durable-fs.ts";
import type { PartialStore } from "./download.ts";
import {
  checkSlotName,
  type HealthCheck,
  ImageDigest,
  type InitialImage,
  SLOT_NAMES,
  type SlotMeta,
  type SlotName,
  type SlotState,
  type SlotStore,
  type SlotWriter,
  simulatedHealthCheck,
  slotRules,
} from "./slots.ts";

const STATE_FILE = "slots.json";
let tempCounter = 0;

/** Replaces `path` with `data` atomically. */
async function writeAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${++tempCounter}`;
  const fd = await open(tmp, "w", 0o600);
  try {
    await fd.writeFile(data);
    await fd.sync();
  } finally {
    await fd.close();
  }
  await rename(tmp, path);
}

function parseState(text: string): SlotState {
  const bad = () => new HandsafeError("updates.slot_state_invalid", "slots.json is not a slot state");
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad();
  }
  const s = v as SlotState;
  if (typeof s !== "object" || s === null || (s.active !== "a" && s.active !== "b")) throw bad();
  if (s.pending !== null && s.pending !== "a" && s.pending !== "b") throw bad();
  if (typeof s.slots !== "object" || s.slots === null) throw bad();
  for (const slot of SLOT_NAMES) {
    const m = s.slots[slot];
    if (m === undefined) continue;
    if (typeof m.version !== "string" || !/^[0-9a-f]{64}$/.test(m.sha256) || !Number.isSafeInteger(m.length))
      throw bad();
  }
  return { active: s.active, pending: s.pending, slots: { ...s.slots } };
}

export class FolderSlotStore implements SlotStore {
  #state: SlotState;
  /** One state change at a time. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly dir: string,
    state: SlotState,
    private readonly check: HealthCheck,
  ) {
    this.#state = state;
  }

  /**
   * Opens the slots in `dir`; on first use `initial` is required and written (slot a active).
   * `healthCheck` replaces the simulator's check (see slots.ts).
   */
  static async open(
    dir: string,
    options: { initial?: { a: InitialImage; b?: InitialImage }; healthCheck?: HealthCheck } = {},
  ): Promise<FolderSlotStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const check = options.healthCheck ?? simulatedHealthCheck;
    let text: string | undefined;
    try {
      text = await readFile(join(dir, STATE_FILE), "utf8");
    } catch (e) {
      if ((e as { code?: string }).code !== "ENOENT") throw e;
    }
    if (text !== undefined) return new FolderSlotStore(dir, parseState(text), check);
    if (!options.initial)
      throw new HandsafeError(
        "updates.slot_state_missing",
        `no ${STATE_FILE} in ${dir}: give initial images`,
      );
    const state: SlotState = { active: "a", pending: null, slots: {} };
    for (const slot of SLOT_NAMES) {
      const img = options.initial[slot];
      if (!img) continue;
      const d = new ImageDigest();
      d.update(img.image);
      await writeAtomic(join(dir, `${slot}.img`), img.image);
      state.slots[slot] = { version: img.version, sha256: d.hex(), length: d.length };
    }
    await writeAtomic(join(dir, STATE_FILE), JSON.stringify(state, null, 2));
    await syncFolder(dir);
    return new FolderSlotStore(dir, state, check);
  }

  #path(slot: SlotName): string {
    return join(this.dir, `${slot}.img`);
  }

  #change(fn: (state: SlotState) => SlotState): Promise<void> {
    const run = this.#queue.then(async () => {
      const next = fn(this.#state);
      if (next === this.#state) return;
      await writeAtomic(join(this.dir, STATE_FILE), JSON.stringify(next, null, 2));
      await syncFolder(this.dir);
      this.#state = next;
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async active(): Promise<SlotName> {
    return this.#state.active;
  }

  async pending(): Promise<SlotName | null> {
    return this.#state.pending;
  }

  async *read(slot: SlotName): AsyncIterable<Uint8Array> {
    checkSlotName(slot);
    if (!this.#state.slots[slot])
      throw new HandsafeError("updates.slot_empty", `slot ${slot} holds no image`, { status: 409 });
    yield* fileChunks(this.#path(slot));
  }

  async openWriter(slot: SlotName, info: { version: string }): Promise<SlotWriter> {
    slotRules.openWriter(this.#state, slot);
    const tmp = `${this.#path(slot)}.tmp-${process.pid}-${++tempCounter}`;
    const fd = await open(tmp, "w", 0o600);
    const digest = new ImageDigest();
    let open_ = true;
    const assertOpen = () => {
      if (!open_) throw new HandsafeError("updates.slot_writer_closed", "this slot writer is closed");
    };
    return {
      write: async (chunk) => {
        assertOpen();
        await fd.write(chunk);
        digest.update(chunk);
      },
      commit: async () => {
        assertOpen();
        open_ = false;
        try {
          await fd.sync();
        } finally {
          await fd.close();
        }
        const meta: SlotMeta = { version: info.version, sha256: digest.hex(), length: digest.length };
        try {
          await this.#change((s) => {
            slotRules.openWriter(s, slot);
            const slots = { ...s.slots };
            delete slots[slot];
            return { ...s, slots };
          });
          await rename(tmp, this.#path(slot));
          await syncFolder(this.dir);
        } catch (e) {
          await rm(tmp, { force: true });
          throw e;
        }
        await this.#change((s) => ({ ...s, slots: { ...s.slots, [slot]: meta } }));
        return { ...meta };
      },
      abort: async () => {
        if (!open_) return;
        open_ = false;
        await fd.close().catch(() => undefined);
        await rm(tmp, { force: true });
      },
    };
  }

  async meta(slot: SlotName): Promise<SlotMeta | undefined> {
    checkSlotName(slot);
    const m = this.#state.slots[slot];
    return m ? { ...m } : undefined;
  }

  setPending(slot: SlotName): Promise<void> {
    return this.#change((s) => slotRules.setPending(s, slot));
  }

  switchTo(slot: SlotName): Promise<void> {
    return this.#change((s) => slotRules.switchTo(s, slot));
  }

  confirm(slot: SlotName): Promise<void> {
    return this.#change((s) => slotRules.confirm(s, slot));
  }

  healthCheck(slot: SlotName): Promise<boolean> {
    checkSlotName(slot);
    return this.check(slot, this);
  }
}

/** An unfinished download in `dir`: partial.bin (the bytes) and partial.json (which target). */
export class FolderPartialStore implements PartialStore {
  constructor(readonly dir: string) {}

  #bin(): string {
    return join(this.dir, "partial.bin");
  }
  #label(): string {
    return join(this.dir, "partial.json");
  }

  async id(): Promise<string | undefined> {
    try {
      const v = JSON.parse(await readFile(this.#label(), "utf8")) as { id?: unknown };
      return typeof v.id === "string" ? v.id : undefined;
    } catch {
      return undefined;
    }
  }

  async start(id: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await rm(this.#label(), { force: true });
    await writeFile(this.#bin(), new Uint8Array(0), { mode: 0o600 });
    await writeAtomic(this.#label(), JSON.stringify({ id }));
  }

  async append(chunk: Uint8Array): Promise<void> {
    if ((await this.id()) === undefined)
      throw new HandsafeError("updates.partial_not_started", "start the partial store before appending");
    await writeFile(this.#bin(), chunk, { flag: "a" });
  }

  async size(): Promise<number> {
    try {
      return (await stat(this.#bin())).size;
    } catch {
      return 0;
    }
  }

  async *read(): AsyncIterable<Uint8Array> {
    if ((await this.size()) === 0) return;
    yield* fileChunks(this.#bin());
  }

  async clear(): Promise<void> {
    await rm(this.#label(), { force: true });
    await rm(this.#bin(), { force: true });
  }
}

/** A file in 64 KiB reads; each chunk a view of the fresh buffer its read filled, not a copy of it. */
async function* fileChunks(path: string): AsyncGenerator<Uint8Array> {
  for await (const chunk of createReadStream(path, { highWaterMark: 64 * 1024 })) {
    const b = chunk as Buffer;
    yield new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }
}
