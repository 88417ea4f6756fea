/** TUF's attack list (spec §1.5.2) against our client: each one refused, with its code. */
import { describe, expect, it } from "vitest";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { createTargetVerifier, TufClient, verifyTarget } from "../../src/updates/tuf/index.ts";
import {
  at,
  clientFor,
  DAY,
  FIRMWARE,
  FIRMWARE_PATH,
  forge,
  HOUR,
  KEYS,
  makeRepository,
  network,
  refused,
  seed,
  T0,
  withSignatures,
} from "./helpers.ts";

/** A client that trusts the repository as it is now (timestamp, snapshot and targets v2). */
async function trustingClient() {
  const { repo, signers } = await makeRepository();
  const files = repo.files();
  const client = clientFor(files);
  await client.refresh(network(files).fetch, { now: at(HOUR) });
  return { repo, signers, files, client };
}

describe("the happy path", () => {
  it("refreshes, finds the firmware and verifies it, whole and streamed", async () => {
    const { client } = await trustingClient();
    const info = client.getTargetInfo(FIRMWARE_PATH);
    expect(info.length).toBe(FIRMWARE.length);
    expect(info.fileName).toMatch(/^firmware\/model-x\/[0-9a-f]{64}\.1\.2\.0\.img$/);
    expect(info.custom?.["toVersion"]).toBe("1.2.0");
    verifyTarget(info, FIRMWARE);
    const v = createTargetVerifier(info);
    for (let i = 0; i < FIRMWARE.length; i += 7) v.update(FIRMWARE.subarray(i, i + 7));
    v.finish();
    expect(v.received).toBe(FIRMWARE.length);
  });

  it("keeps its state as a record, and a restored client carries on", async () => {
    const { repo, signers, client } = await trustingClient();
    const record = JSON.parse(JSON.stringify(client.state));
    repo.addTargetBytes("apps/notes-2.0.apk", utf8("apk"));
    await repo.publish(signers, at(2 * HOUR));
    const restored = TufClient.fromState(record);
    const net = network(repo.files());
    await restored.refresh(net.fetch, { now: at(3 * HOUR) });
    expect(net.requested).toEqual(["2.root.json", "timestamp.json", "3.snapshot.json", "3.targets.json"]);
    expect(restored.listTargets().sort()).toEqual(["apps/notes-2.0.apk", FIRMWARE_PATH]);
  });

  it("treats the same timestamp again as 'nothing new', without fetching anything else", async () => {
    const { files, client } = await trustingClient();
    const net = network(files);
    await client.refresh(net.fetch, { now: at(2 * HOUR) });
    expect(net.requested).toEqual(["2.root.json", "timestamp.json"]);
  });

  it("refuses a tampered stored state", async () => {
    const { client } = await trustingClient();
    const state = { ...client.state, targets: client.state.targets!.replace('"length":', '"length":1') };
    expect(await refused(() => TufClient.fromState(state))).toBe("tuf.bad_state");
  });

  it("refuses to answer before a refresh, and names unknown targets", async () => {
    const { files, client } = await trustingClient();
    expect(await refused(() => clientFor(files).getTargetInfo(FIRMWARE_PATH))).toBe("tuf.bad_state");
    expect(await refused(() => client.getTargetInfo("firmware/model-y.img"))).toBe("tuf.unknown_target");
    expect(await refused(() => client.getTargetInfo("__proto__"))).toBe("tuf.unknown_target");
  });
});

describe("arbitrary package attack", () => {
  it("refuses target bytes replaced by others of the same length", async () => {
    const { client } = await trustingClient();
    const info = client.getTargetInfo(FIRMWARE_PATH);
    const evil = FIRMWARE.slice();
    evil[10] = evil[10]! ^ 1;
    expect(await refused(() => verifyTarget(info, evil))).toBe("tuf.hash_mismatch");
    const v = createTargetVerifier(info);
    v.update(evil);
    expect(await refused(() => v.finish())).toBe("tuf.hash_mismatch");
    expect(await refused(() => v.finish())).toBe("tuf.bad_state");
  });

  it("refuses a truncated target", async () => {
    const { client } = await trustingClient();
    const info = client.getTargetInfo(FIRMWARE_PATH);
    expect(await refused(() => verifyTarget(info, FIRMWARE.subarray(1)))).toBe("tuf.length_mismatch");
    const v = createTargetVerifier(info);
    v.update(FIRMWARE.subarray(1));
    expect(await refused(() => v.finish())).toBe("tuf.length_mismatch");
  });
});

describe("rollback attack", () => {
  it("refuses an older timestamp.json", async () => {
    const { repo, signers, files } = await trustingClient();
    const oldTimestamp = files.get("timestamp.json")!;
    await repo.refreshTimestamp(signers, at(2 * HOUR));
    const client = clientFor(files);
    await client.refresh(network(repo.files()).fetch, { now: at(3 * HOUR) });
    const replay = network(repo.files(), { "timestamp.json": oldTimestamp });
    expect(await refused(client.refresh(replay.fetch, { now: at(4 * HOUR) }))).toBe("tuf.rollback");
  });

  it("refuses a timestamp (stolen key) that names an older snapshot", async () => {
    const { files, client } = await trustingClient();
    const forged = forge(
      files.get("timestamp.json")!,
      (s) => {
        s["version"] = 3;
        (s["meta"] as Record<string, { version: number }>)["snapshot.json"]!.version = 1;
      },
      [seed(4)],
    );
    const net = network(files, { "timestamp.json": forged });
    expect(await refused(client.refresh(net.fetch, { now: at(2 * HOUR) }))).toBe("tuf.rollback");
  });

  it("refuses a snapshot (stolen timestamp and snapshot keys) that names an older targets", async () => {
    const { files, client } = await trustingClient();
    const snapshot = forge(
      files.get("2.snapshot.json")!,
      (s) => {
        s["version"] = 3;
        (s["meta"] as Record<string, { version: number }>)["targets.json"]!.version = 1;
      },
      [seed(3)],
    );
    const timestamp = forge(
      files.get("timestamp.json")!,
      (s) => {
        s["version"] = 3;
        (s["meta"] as Record<string, unknown>)["snapshot.json"] = { version: 3 };
      },
      [seed(4)],
    );
    const net = network(files, { "timestamp.json": timestamp, "3.snapshot.json": snapshot });
    expect(await refused(client.refresh(net.fetch, { now: at(2 * HOUR) }))).toBe("tuf.rollback");
  });

  it("refuses a root N+1 file that holds an older root", async () => {
    const { repo, signers } = await makeRepository();
    await repo.rotateKeys({ root: { add: [KEYS.root2.key] } }, [KEYS.root], at(HOUR));
    await repo.rotateKeys({ root: { remove: [KEYS.root.keyid] } }, [KEYS.root, KEYS.root2], at(HOUR));
    await repo.publish(signers, at(HOUR));
    const files = repo.files();
    const client = clientFor(files);
    await client.refresh(network(files).fetch, { now: at(2 * HOUR) });
    expect(client.root.version).toBe(3);
    const net = network(files, { "4.root.json": files.get("2.root.json")! });
    expect(await refused(client.refresh(net.fetch, { now: at(3 * HOUR) }))).toBe("tuf.threshold_not_met");
    const skip = network(files, { "2.root.json": files.get("3.root.json")! });
    expect(await refused(clientFor(files).refresh(skip.fetch, { now: at(3 * HOUR) }))).toBe(
      "tuf.version_mismatch",
    );
  });
});

describe("indefinite freeze attack", () => {
  it("refuses a timestamp that has expired (served unchanged for more than a day)", async () => {
    const { files } = await trustingClient();
    const fresh = clientFor(files);
    expect(await refused(fresh.refresh(network(files).fetch, { now: at(DAY + 1000) }))).toBe("tuf.expired");
  });

  it("refuses to go on with a trusted timestamp that expired, when nothing newer is served", async () => {
    const { files, client } = await trustingClient();
    expect(await refused(client.refresh(network(files).fetch, { now: at(DAY) }))).toBe("tuf.expired");
  });

  it("refuses an expired snapshot even under a fresh timestamp", async () => {
    const { repo, signers, files } = await trustingClient();
    await repo.refreshTimestamp(signers, at(8 * DAY));
    const client = clientFor(files);
    expect(await refused(client.refresh(network(repo.files()).fetch, { now: at(8 * DAY) }))).toBe(
      "tuf.expired",
    );
  });

  it("refuses an expired root", async () => {
    const { files } = await trustingClient();
    expect(await refused(clientFor(files).refresh(network(files).fetch, { now: at(366 * DAY) }))).toBe(
      "tuf.expired",
    );
  });
});

describe("endless data attack", () => {
  it("refuses metadata longer than its bound, whatever the fetch returns", async () => {
    const { files } = await trustingClient();
    const big = new Uint8Array(20_000).fill(0x20);
    big.set(files.get("timestamp.json")!);
    const net = network(files, { "timestamp.json": big });
    expect(await refused(clientFor(files).refresh(net.fetch, { now: at(HOUR) }))).toBe("tuf.length_mismatch");
    const huge = network(files, { "2.root.json": new Uint8Array(600_000) });
    expect(await refused(clientFor(files).refresh(huge.fetch, { now: at(HOUR) }))).toBe(
      "tuf.length_mismatch",
    );
  });

  it("asks for the snapshot with the length the timestamp gives, and refuses one byte more", async () => {
    const { files } = await trustingClient();
    const snapshot = files.get("2.snapshot.json")!;
    const limits: number[] = [];
    const longer = new Uint8Array(snapshot.length + 1).fill(0x20);
    longer.set(snapshot);
    const client = clientFor(files);
    const result = refused(
      client.refresh(
        async (name, max) => {
          if (name === "2.snapshot.json") limits.push(max);
          return name === "2.snapshot.json" ? longer : (files.get(name) ?? null);
        },
        { now: at(HOUR) },
      ),
    );
    expect(await result).toBe("tuf.length_mismatch");
    expect(limits).toEqual([snapshot.length]);
  });

  it("stops a streamed target at the first byte past its length", async () => {
    const { client } = await trustingClient();
    const info = client.getTargetInfo(FIRMWARE_PATH);
    const v = createTargetVerifier(info);
    let chunks = 0;
    const endless = function* () {
      for (;;) yield new Uint8Array(1000);
    };
    const code = await refused(() => {
      for (const chunk of endless()) {
        chunks++;
        v.update(chunk);
      }
    });
    expect(code).toBe("tuf.length_mismatch");
    expect(chunks).toBe(Math.floor(FIRMWARE.length / 1000) + 1);
    expect(v.received).toBeLessThanOrEqual(info.length);
    expect(await refused(() => verifyTarget(info, new Uint8Array(FIRMWARE.length + 1)))).toBe(
      "tuf.length_mismatch",
    );
  });
});

describe("mix-and-match attack", () => {
  it("refuses a targets file other than the version the snapshot names", async () => {
    const { repo, signers, files } = await trustingClient();
    const oldTargets = files.get("2.targets.json")!;
    repo.addTargetBytes("apps/notes-2.0.apk", utf8("apk"));
    await repo.publish(signers, at(2 * HOUR));
    const net = network(repo.files(), { "3.targets.json": oldTargets });
    expect(await refused(clientFor(files).refresh(net.fetch, { now: at(3 * HOUR) }))).toBe(
      "tuf.version_mismatch",
    );
  });

  it("refuses a snapshot file other than the one the timestamp hashes", async () => {
    const { repo, signers, files } = await trustingClient();
    repo.addTargetBytes("apps/notes-2.0.apk", utf8("apk"));
    await repo.publish(signers, at(2 * HOUR));
    const other = forge(
      repo.files().get("3.snapshot.json")!,
      (s) => {
        s["expires"] = "2031-01-01T00:00:00Z";
      },
      [seed(3)],
    );
    const net = network(repo.files(), { "3.snapshot.json": other });
    expect(await refused(clientFor(files).refresh(net.fetch, { now: at(3 * HOUR) }))).toMatch(
      /^tuf\.(hash|length)_mismatch$/,
    );
  });
});

describe("wrong signatures", () => {
  it("refuses targets changed after signing (the signature no longer verifies)", async () => {
    const { files } = await trustingClient();
    const evil = forge(files.get("2.targets.json")!, (s) => {
      const t = s["targets"] as Record<string, { hashes: { sha256: string } }>;
      t[FIRMWARE_PATH]!.hashes.sha256 = "00".repeat(32);
    });
    const net = network(files, { "2.targets.json": evil });
    expect(await refused(clientFor(files).refresh(net.fetch, { now: at(HOUR) }))).toBe("tuf.bad_signature");
  });

  it("refuses metadata signed by a key the root never named", async () => {
    const { files } = await trustingClient();
    const evil = forge(
      files.get("timestamp.json")!,
      (s) => {
        s["version"] = 9;
      },
      [seed(99)],
    );
    const net = network(files, { "timestamp.json": evil });
    expect(await refused(clientFor(files).refresh(net.fetch, { now: at(HOUR) }))).toBe(
      "tuf.threshold_not_met",
    );
  });

  it("refuses a role's metadata signed by another role's key", async () => {
    const { files } = await trustingClient();
    const evil = forge(
      files.get("timestamp.json")!,
      (s) => {
        s["version"] = 9;
      },
      [seed(2)],
    );
    const net = network(files, { "timestamp.json": evil });
    expect(await refused(clientFor(files).refresh(net.fetch, { now: at(HOUR) }))).toBe(
      "tuf.threshold_not_met",
    );
  });

  it("refuses metadata that is not TUF JSON", async () => {
    const { files } = await trustingClient();
    for (const bad of [
      utf8("not json"),
      utf8('{"signatures":[],"signed":{"_type":"snapshot"}}'),
      new Uint8Array([0xff]),
    ]) {
      const net = network(files, { "timestamp.json": bad });
      expect(await refused(clientFor(files).refresh(net.fetch, { now: at(HOUR) }))).toBe("tuf.bad_metadata");
    }
  });
});

describe("too few signatures", () => {
  it("refuses threshold-2 targets with one valid signature, or one signature twice", async () => {
    const { repo } = await makeRepository(T0, {
      targets: { keys: [KEYS.targets, KEYS.targetsB], threshold: 2 },
    });
    const files = repo.files();
    expect(repo.targets.signatures).toHaveLength(2);
    const good = clientFor(files);
    await good.refresh(network(files).fetch, { now: at(HOUR) });
    const targets = files.get("2.targets.json")!;
    const one = withSignatures(targets, (sigs) => sigs.splice(1));
    expect(
      await refused(
        clientFor(files).refresh(network(files, { "2.targets.json": one }).fetch, { now: at(HOUR) }),
      ),
    ).toBe("tuf.threshold_not_met");
    const twice = withSignatures(targets, (sigs) => sigs.splice(1, 1, { ...sigs[0]! }));
    expect(
      await refused(
        clientFor(files).refresh(network(files, { "2.targets.json": twice }).fetch, { now: at(HOUR) }),
      ),
    ).toBe("tuf.threshold_not_met");
  });

  it("will not publish with fewer signers than the threshold", async () => {
    const { repo } = await makeRepository(T0, {
      targets: { keys: [KEYS.targets, KEYS.targetsB], threshold: 2 },
    });
    repo.addTargetBytes("x.bin", utf8("x"));
    expect(await refused(repo.publish([KEYS.targets, KEYS.snapshot, KEYS.timestamp], at(HOUR)))).toBe(
      "tuf.threshold_not_met",
    );
    expect(repo.unpublished).toContain("targets");
  });
});

describe("revoked keys", () => {
  it("no longer counts the old targets key after rotation", async () => {
    const { repo, signers, files } = await trustingClient();
    await repo.rotateKeys(
      { targets: { add: [KEYS.targets2.key], remove: [KEYS.targets.keyid] } },
      [KEYS.root],
      at(HOUR),
    );
    await repo.publish([...signers, KEYS.targets2], at(HOUR));
    const rotated = repo.files();
    const version = repo.targets.signed.version;
    const byOldKey = forge(rotated.get(`${version}.targets.json`)!, () => {}, [seed(2)]);
    const net = network(rotated, { [`${version}.targets.json`]: byOldKey });
    expect(await refused(clientFor(files).refresh(net.fetch, { now: at(2 * HOUR) }))).toBe(
      "tuf.threshold_not_met",
    );
    const ok = clientFor(files);
    await ok.refresh(network(rotated).fetch, { now: at(2 * HOUR) });
    expect(ok.getTargetInfo(FIRMWARE_PATH).length).toBe(FIRMWARE.length);
  });

  it("no longer counts the old root key after rotation", async () => {
    const { repo, signers } = await makeRepository();
    await repo.rotateKeys(
      { root: { add: [KEYS.root2.key], remove: [KEYS.root.keyid] } },
      [KEYS.root, KEYS.root2],
      at(HOUR),
    );
    await repo.publish(signers, at(HOUR));
    const files = repo.files();
    const client = clientFor(files);
    await client.refresh(network(files).fetch, { now: at(2 * HOUR) });
    // The thief of the old root key writes root 3 giving himself every role.
    const evil = forge(
      files.get("2.root.json")!,
      (s) => {
        s["version"] = 3;
      },
      [seed(1)],
    );
    const net = network(files, { "3.root.json": evil });
    expect(await refused(client.refresh(net.fetch, { now: at(3 * HOUR) }))).toBe("tuf.threshold_not_met");
  });

  it("revokeKey takes a key out of every role", async () => {
    const { repo, signers } = await makeRepository(T0, {
      timestamp: { keys: [KEYS.timestamp, KEYS.timestamp2], threshold: 1 },
    });
    await repo.revokeKey(KEYS.timestamp.keyid, [KEYS.root], at(HOUR));
    expect(repo.root.signed.roles.timestamp.keyids).toEqual([KEYS.timestamp2.keyid]);
    expect(repo.root.signed.keys[KEYS.timestamp.keyid]).toBeUndefined();
    const withoutNewKey = signers.filter((s) => s !== KEYS.timestamp2);
    expect(await refused(repo.publish(withoutNewKey, at(HOUR)))).toBe("tuf.threshold_not_met");
    await repo.publish(signers, at(HOUR));
    const files = repo.files();
    await clientFor(files).refresh(network(files).fetch, { now: at(2 * HOUR) });
  });
});

describe("fast-forward attack, and recovery", () => {
  it("recovers from a timestamp version pushed to 2^31 once the timestamp key is rotated", async () => {
    const { repo, signers, files, client } = await trustingClient();
    const ff = forge(
      files.get("timestamp.json")!,
      (s) => {
        s["version"] = 2 ** 31;
      },
      [seed(4)],
    );
    await client.refresh(network(files, { "timestamp.json": ff }).fetch, { now: at(HOUR) });
    // The repository is still honest: its next timestamp looks like a rollback to this client.
    await repo.refreshTimestamp(signers, at(2 * HOUR));
    expect(await refused(client.refresh(network(repo.files()).fetch, { now: at(3 * HOUR) }))).toBe(
      "tuf.rollback",
    );
    // Recovery (§5.3.11): a new root with a new timestamp key; the client forgets the old timestamp.
    await repo.rotateKeys(
      { timestamp: { add: [KEYS.timestamp2.key], remove: [KEYS.timestamp.keyid] } },
      [KEYS.root],
      at(3 * HOUR),
    );
    await repo.publish([...signers, KEYS.timestamp2], at(3 * HOUR));
    await client.refresh(network(repo.files()).fetch, { now: at(4 * HOUR) });
    expect(client.root.version).toBe(2);
    expect(JSON.parse(client.state.timestamp!).signed.version).toBe(repo.timestamp.signed.version);
  });
});

describe("key rotations the client follows", () => {
  it("accepts a repository after a root rotation and a targets rotation, from 1.root.json", async () => {
    const { repo, signers, files, client } = await trustingClient();
    await repo.rotateKeys(
      { root: { add: [KEYS.root2.key], remove: [KEYS.root.keyid] } },
      [KEYS.root, KEYS.root2],
      at(HOUR),
    );
    await repo.rotateKeys(
      { targets: { add: [KEYS.targets2.key], remove: [KEYS.targets.keyid] } },
      [KEYS.root2],
      at(HOUR),
    );
    repo.addTargetBytes("firmware/model-x/1.3.0.img", utf8("v1.3.0"), {
      models: ["model-x"],
      toVersion: "1.3.0",
      kind: "full",
      channel: "beta",
    });
    await repo.publish([...signers, KEYS.targets2], at(HOUR));
    const now = repo.files();
    expect([...now.keys()].filter((n) => n.endsWith(".root.json"))).toEqual([
      "1.root.json",
      "2.root.json",
      "3.root.json",
    ]);
    for (const c of [client, clientFor(files)]) {
      await c.refresh(network(now).fetch, { now: at(2 * HOUR) });
      expect(c.root.version).toBe(3);
      verifyTarget(c.getTargetInfo("firmware/model-x/1.3.0.img"), utf8("v1.3.0"));
    }
  });
});
