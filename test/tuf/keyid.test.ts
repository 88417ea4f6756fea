/** Known answers: a key's keyid, and our metadata as @tufjs/models reads and verifies it. */
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { MetadataKind, Metadata as TufJsMetadata } from "@tufjs/models";
import { describe, expect, it } from "vitest";
import { fromHex, fromUtf8 } from "../../src/core/codec/bytes.ts";
import { ed25519TufKey, keyidOf, seedSigner } from "../../src/updates/tuf/index.ts";
import { makeRepository } from "./helpers.ts";

// RFC 8032 §7.1, TEST 1.
const SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

describe("keyid", () => {
  it("is the sha256 of the key's canonical JSON (computed here with node:crypto)", () => {
    // The public key from the seed by node:crypto (PKCS#8 prefix for an Ed25519 seed, RFC 8410).
    const pkcs8 = Buffer.concat([
      Buffer.from("302e020100300506032b657004220420", "hex"),
      Buffer.from(SEED, "hex"),
    ]);
    const spki = createPublicKey(createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" })).export({
      format: "der",
      type: "spki",
    });
    expect(spki.subarray(-32).toString("hex")).toBe(PUBLIC);
    const canonical = `{"keytype":"ed25519","keyval":{"public":"${PUBLIC}"},"scheme":"ed25519"}`;
    const expected = createHash("sha256").update(canonical, "utf8").digest("hex");
    expect(keyidOf(ed25519TufKey(fromHex(PUBLIC)))).toBe(expected);
    expect(seedSigner(fromHex(SEED)).keyid).toBe(expected);
    // Pinned, so a change of canonical form or hash shows up even if both sides drift together.
    expect(expected).toBe("74c181c7ad8a0855d4b55e44d2ba87aabdddb196832571f15f92fece332e4916");
  });

  it("our root, snapshot, timestamp and targets verify with @tufjs/models", async () => {
    const { repo } = await makeRepository(new Date());
    const files = repo.files();
    const json = (name: string) => JSON.parse(fromUtf8(files.get(name)!));
    const root = TufJsMetadata.fromJSON(MetadataKind.Root, json("1.root.json"));
    root.verifyDelegate("root", root);
    root.verifyDelegate("targets", TufJsMetadata.fromJSON(MetadataKind.Targets, json("2.targets.json")));
    root.verifyDelegate("snapshot", TufJsMetadata.fromJSON(MetadataKind.Snapshot, json("2.snapshot.json")));
    root.verifyDelegate("timestamp", TufJsMetadata.fromJSON(MetadataKind.Timestamp, json("timestamp.json")));
    for (const id of Object.keys(root.signed.keys)) expect(root.signed.keys[id]!.keyID).toBe(id);
    expect(root.signed.specVersion).toBe("1.0.31");
  });
});
