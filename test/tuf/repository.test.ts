/** The repository model: offline root signing, records, inputs it refuses. */
import { describe, expect, it } from "vitest";
import { fromUtf8, utf8 } from "../../src/core/codec/bytes.ts";
import {
  addSignature,
  parseUpdateCustom,
  signOffline,
  TufRepository,
  targetFileName,
} from "../../src/updates/tuf/index.ts";
import {
  at,
  clientFor,
  FIRMWARE,
  FIRMWARE_PATH,
  HOUR,
  KEYS,
  makeRepository,
  network,
  refused,
  seed,
  T0,
} from "./helpers.ts";

const ONLINE = [KEYS.targets, KEYS.snapshot, KEYS.timestamp];
const roles = {
  root: { keys: [KEYS.root.key], threshold: 1 },
  targets: { keys: [KEYS.targets.key], threshold: 1 },
  snapshot: { keys: [KEYS.snapshot.key], threshold: 1 },
  timestamp: { keys: [KEYS.timestamp.key], threshold: 1 },
};

describe("offline root signing", () => {
  it("creates and rotates root with keys that never reach the server", async () => {
    // Day 0: the server prepares 1.root.json; the offline machine signs it with the root seed.
    const initial = TufRepository.prepareInitialRoot(roles, { now: T0 });
    const sig1 = signOffline(initial.bytes, seed(1));
    expect(sig1.keyid).toBe(KEYS.root.keyid);
    const repo = await TufRepository.fromSignedRoot(addSignature(initial.metadata, sig1.keyid, sig1.sig), {
      signers: ONLINE,
      now: T0,
    });
    // Later: a new root key. Version 2 needs the old key AND the new key.
    const update = repo.prepareRootUpdate(
      { root: { add: [KEYS.root2.key], remove: [KEYS.root.keyid] } },
      at(HOUR),
    );
    const text = fromUtf8(update.bytes);
    expect(JSON.parse(text).signed.version).toBe(2);
    const byOld = signOffline(text, seed(1));
    const byNew = signOffline(text, seed(11));
    const onlyOld = addSignature(update.metadata, byOld.keyid, byOld.sig);
    expect(await refused(() => repo.commitRootUpdate(onlyOld))).toBe("tuf.threshold_not_met");
    const onlyNew = addSignature(update.metadata, byNew.keyid, byNew.sig);
    expect(await refused(() => repo.commitRootUpdate(onlyNew))).toBe("tuf.threshold_not_met");
    const forgedSig = addSignature(onlyNew, byOld.keyid, byNew.sig);
    expect(await refused(() => repo.commitRootUpdate(forgedSig))).toBe("tuf.bad_signature");
    repo.commitRootUpdate(addSignature(onlyOld, byNew.keyid, byNew.sig));
    expect(repo.unpublished).toEqual([]);
    const files = repo.files();
    expect([...files.keys()].sort()).toEqual([
      "1.root.json",
      "1.snapshot.json",
      "1.targets.json",
      "2.root.json",
      "timestamp.json",
    ]);
    const client = clientFor(files);
    await client.refresh(network(files).fetch, { now: at(2 * HOUR) });
    expect(client.root.version).toBe(2);
    expect(client.root.roles.root.keyids).toEqual([KEYS.root2.keyid]);
  });

  it("refuses an initial root that its own keys did not sign, and a root that skips a version", async () => {
    const initial = TufRepository.prepareInitialRoot(roles, { now: T0 });
    const stranger = signOffline(initial.bytes, seed(99));
    expect(
      await refused(
        TufRepository.fromSignedRoot(addSignature(initial.metadata, stranger.keyid, stranger.sig), {
          signers: ONLINE,
        }),
      ),
    ).toBe("tuf.threshold_not_met");
    const { repo } = await makeRepository();
    const update = repo.prepareRootUpdate({}, at(HOUR));
    update.metadata.signed.version = 3;
    const s = signOffline(JSON.stringify(update.metadata), seed(1));
    expect(await refused(() => repo.commitRootUpdate(addSignature(update.metadata, s.keyid, s.sig)))).toBe(
      "tuf.version_mismatch",
    );
  });
});

describe("the repository model", () => {
  it("round-trips through its record, unpublished changes included", async () => {
    const { repo, signers } = await makeRepository();
    repo.addTargetBytes("apps/a.apk", utf8("a"));
    const copy = TufRepository.fromRecord(JSON.parse(JSON.stringify(repo.toRecord())));
    expect(copy.unpublished.sort()).toEqual(["snapshot", "targets", "timestamp"]);
    await copy.publish(signers, at(HOUR));
    expect(Object.keys(copy.targets.signed.targets).sort()).toEqual(["apps/a.apk", FIRMWARE_PATH]);
    expect(await refused(() => repo.files())).toBe("tuf.bad_request");
  });

  it("signs with the default lifetimes, or the ones set", async () => {
    const { repo, signers } = await makeRepository();
    expect(repo.root.signed.expires).toBe("2031-01-01T00:00:00Z");
    expect(repo.targets.signed.expires).toBe("2030-04-01T00:00:00Z");
    expect(repo.snapshot.signed.expires).toBe("2030-01-08T00:00:00Z");
    expect(repo.timestamp.signed.expires).toBe("2030-01-02T00:00:00Z");
    repo.setExpiry("timestamp", 600);
    await repo.refreshTimestamp(signers, T0);
    expect(repo.timestamp.signed.expires).toBe("2030-01-01T00:10:00Z");
    expect(repo.timestamp.signed.version).toBe(3);
    expect(repo.snapshot.signed.version).toBe(2);
  });

  it("names target files <dir>/<sha256>.<basename> and checks the bytes given", async () => {
    const { repo } = await makeRepository();
    const digest = repo.targets.signed.targets[FIRMWARE_PATH]!.hashes["sha256"]!;
    expect(targetFileName("a.bin", "ff")).toBe("ff.a.bin");
    const files = repo.files(new Map([[FIRMWARE_PATH, FIRMWARE]]));
    expect(files.get(`firmware/model-x/${digest}.1.2.0.img`)).toEqual(FIRMWARE);
    expect(await refused(() => repo.files(new Map([[FIRMWARE_PATH, utf8("other")]])))).toBe(
      "tuf.bad_request",
    );
    expect(await refused(() => repo.files(new Map([["nope", FIRMWARE]])))).toBe("tuf.unknown_target");
  });

  it("refuses bad paths, custom values, thresholds and unknown keys", async () => {
    const { repo } = await makeRepository();
    for (const path of ["", "/abs", "a//b", "a/../b", "./a", "a/", "a\\b", "a\nb"])
      expect(await refused(() => repo.addTargetBytes(path, utf8("x"))), path).toBe("tuf.bad_request");
    expect(await refused(() => repo.addTargetBytes("x", utf8("x"), { ratio: 0.5 }))).toBe("tuf.bad_request");
    expect(await refused(() => repo.prepareRootUpdate({ targets: { threshold: 2 } }))).toBe(
      "tuf.bad_request",
    );
    expect(await refused(() => repo.prepareRootUpdate({ targets: { remove: [KEYS.targets.keyid] } }))).toBe(
      "tuf.bad_request",
    );
    expect(await refused(() => repo.prepareRootUpdate({ snapshot: { remove: [KEYS.root.keyid] } }))).toBe(
      "tuf.bad_request",
    );
    expect(await refused(() => repo.removeTarget("nope"))).toBe("tuf.unknown_target");
    expect(await refused(() => addSignature(repo.root, "ab", "00"))).toBe("tuf.bad_request");
  });

  it("reads update descriptions in custom", () => {
    expect(parseUpdateCustom({ models: ["m"], toVersion: "2", kind: "full", channel: "stable" }).kind).toBe(
      "full",
    );
    expect(() => parseUpdateCustom({ models: ["m"], toVersion: "2", kind: "delta", channel: "s" })).toThrow(
      expect.objectContaining({ code: "tuf.bad_metadata" }),
    );
  });
});
