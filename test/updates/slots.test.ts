/** The simulated A/B layout: both stores, atomic commit, abort keeps the old image, health check. */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { concatBytes, utf8 } from "../../src/core/codec/bytes.ts";
import {
  type InitialImage,
  MemorySlotStore,
  type SlotName,
  type SlotStore,
} from "../../src/updates/slots.ts";
import { FolderSlotStore } from "../../src/updates/slots-folder.ts";

const V1 = { version: "1.0.0", image: utf8("image one ".repeat(20_000)) };
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return "accepted";
}

async function readAll(store: SlotStore, slot: SlotName): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of store.read(slot)) parts.push(c);
  return concatBytes(...parts);
}

const same = (x: Uint8Array, y: Uint8Array) => Buffer.from(x).equals(Buffer.from(y));

async function write(store: SlotStore, slot: SlotName, version: string, image: Uint8Array) {
  const w = await store.openWriter(slot, { version });
  for (let at = 0; at < image.length; at += 10_000) await w.write(image.subarray(at, at + 10_000));
  return w.commit();
}

interface Kind {
  name: string;
  make(initial: { a: InitialImage; b?: InitialImage }): Promise<SlotStore & { dir?: string }>;
  corrupt(store: SlotStore, slot: SlotName, bytes: Uint8Array): void;
}

const kinds: Kind[] = [
  {
    name: "MemorySlotStore",
    make: async (initial) => new MemorySlotStore(initial),
    corrupt: (store, slot, bytes) => (store as MemorySlotStore).corrupt(slot, bytes),
  },
  {
    name: "FolderSlotStore",
    make: async (initial) => {
      const dir = mkdtempSync(join(tmpdir(), "handsafe-slots-"));
      dirs.push(dir);
      return FolderSlotStore.open(dir, { initial });
    },
    corrupt: (store, slot, bytes) =>
      writeFileSync(join((store as FolderSlotStore).dir, `${slot}.img`), bytes),
  },
];

describe.each(kinds)("$name", (kind) => {
  it("starts on slot a with its image and records its hash", async () => {
    const store = await kind.make({ a: V1 });
    expect(await store.active()).toBe("a");
    expect(await store.pending()).toBeNull();
    expect((await store.meta("a"))?.version).toBe("1.0.0");
    expect((await store.meta("a"))?.length).toBe(V1.image.length);
    expect(await store.meta("b")).toBeUndefined();
    expect(same(await readAll(store, "a"), V1.image)).toBe(true);
    expect(await store.healthCheck("a")).toBe(true);
  });

  it("never writes the running slot", async () => {
    const store = await kind.make({ a: V1 });
    expect(await codeOf(store.openWriter("a", { version: "2" }))).toBe("updates.slot_active");
  });

  it("commits a written slot all at once, with its hash and length", async () => {
    const store = await kind.make({ a: V1 });
    const image = utf8("image two ".repeat(30_000));
    const meta = await write(store, "b", "2.0.0", image);
    expect(meta).toEqual(await store.meta("b"));
    expect(meta.length).toBe(image.length);
    expect(same(await readAll(store, "b"), image)).toBe(true);
    expect(await store.healthCheck("b")).toBe(true);
  });

  it("an aborted write leaves the old image and meta of the slot", async () => {
    const old = { version: "0.9.0", image: utf8("old b ".repeat(1000)) };
    const store = await kind.make({ a: V1, b: old });
    const before = await store.meta("b");
    const w = await store.openWriter("b", { version: "2.0.0" });
    await w.write(utf8("half of a new image"));
    await w.abort();
    expect(await store.meta("b")).toEqual(before);
    expect(same(await readAll(store, "b"), old.image)).toBe(true);
    expect(await codeOf(w.write(utf8("more")))).toBe("updates.slot_writer_closed");
    if (store.dir) expect(readdirSync(store.dir).sort()).toEqual(["a.img", "b.img", "slots.json"]);
  });

  it("pending → switch → confirm keeps the new slot; switching back from a trial rolls back", async () => {
    const store = await kind.make({ a: V1 });
    expect(await codeOf(store.setPending("b"))).toBe("updates.slot_empty");
    await write(store, "b", "2.0.0", utf8("two"));
    expect(await codeOf(store.switchTo("b"))).toBe("updates.slot_not_pending");
    await store.setPending("b");
    await store.switchTo("b");
    expect([await store.active(), await store.pending()]).toEqual(["b", "b"]);
    await store.switchTo("a");
    expect([await store.active(), await store.pending()]).toEqual(["a", null]);

    await store.setPending("b");
    await store.switchTo("b");
    await store.confirm("b");
    expect([await store.active(), await store.pending()]).toEqual(["b", null]);
    expect(await codeOf(store.switchTo("a"))).toBe("updates.slot_not_pending");
  });

  describe("health check", () => {
    it("fails an image that starts with HSFAIL (the simulator's failing device)", async () => {
      const store = await kind.make({ a: V1 });
      await write(store, "b", "2.0.0", utf8("HSFAIL: this build does not boot"));
      expect(await store.healthCheck("b")).toBe(false);
    });

    it("fails an image whose bytes changed after they were recorded", async () => {
      const store = await kind.make({ a: V1 });
      await write(store, "b", "2.0.0", utf8("good image"));
      kind.corrupt(store, "b", utf8("good imagf"));
      expect(await store.healthCheck("b")).toBe(false);
    });

    it("fails an empty slot", async () => {
      const store = await kind.make({ a: V1 });
      expect(await store.healthCheck("b")).toBe(false);
    });
  });
});

describe("FolderSlotStore on disk", () => {
  it("reopens with the state it left, and needs initial images only the first time", async () => {
    const dir = mkdtempSync(join(tmpdir(), "handsafe-slots-"));
    dirs.push(dir);
    expect(await codeOf(FolderSlotStore.open(dir))).toBe("updates.slot_state_missing");
    const store = await FolderSlotStore.open(dir, { initial: { a: V1 } });
    await write(store, "b", "2.0.0", utf8("two"));
    await store.setPending("b");
    await store.switchTo("b");
    await store.confirm("b");
    const again = await FolderSlotStore.open(dir);
    expect(await again.active()).toBe("b");
    expect((await again.meta("b"))?.version).toBe("2.0.0");
    expect(same(await readAll(again, "b"), utf8("two"))).toBe(true);
  });

  it("a write that never committed (a crash) leaves only a temporary file, not the slot", async () => {
    const dir = mkdtempSync(join(tmpdir(), "handsafe-slots-"));
    dirs.push(dir);
    const old = { version: "0.9.0", image: utf8("old b") };
    const store = await FolderSlotStore.open(dir, { initial: { a: V1, b: old } });
    const w = await store.openWriter("b", { version: "2.0.0" });
    await w.write(utf8("new bytes, never committed"));
    const reopened = await FolderSlotStore.open(dir);
    expect((await reopened.meta("b"))?.version).toBe("0.9.0");
    expect(same(await readAll(reopened, "b"), old.image)).toBe(true);
    expect(await reopened.healthCheck("b")).toBe(true);
    await w.abort();
  });
});
