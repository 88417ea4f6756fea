/** Provisioning batches: good rows in, each bad row reported on its own line, nothing else lost. */
import { describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { HandsafeError } from "../../src/core/errors.ts";
import { parseHardwareId, parseProvisioningBatch } from "../../src/management/batch.ts";
import { imei } from "./fixtures.ts";

const HEADER = "model,hardware_id,firmware_version,msisdn,owner,memory_layout,static_key";
const KEY = toBase64url(new Uint8Array(32).fill(7));

describe("IMEI / ESN / MEID", () => {
  it("accepts a Luhn-valid IMEI and refuses a wrong check digit", () => {
    expect(parseHardwareId("490154203237518")).toEqual({ id: "490154203237518", kind: "imei" });
    expect(() => parseHardwareId("490154203237519")).toThrow(/Luhn/);
  });
  it("accepts ESN (8 hex) and MEID (14 hex), upper-cased", () => {
    expect(parseHardwareId("8ab3c2d1")).toEqual({ id: "8AB3C2D1", kind: "esn" });
    expect(parseHardwareId("a10000009296f2")).toEqual({ id: "A10000009296F2", kind: "meid" });
  });
  it("refuses anything else", () => {
    for (const bad of ["", "12345", "49015420323751X", "4901542032375180"])
      expect(() => parseHardwareId(bad)).toThrow(HandsafeError);
  });
});

describe("CSV batches", () => {
  it("parses good rows, quoted fields with commas/quotes/newlines, optional static keys", () => {
    const csv = [
      HEADER,
      `HS-100,${imei("35000000000001")},1.0.0,+4915112345678,"Ada, Ltd",,${KEY}`,
      `HS-100,${imei("35000000000002")},1.0.0,,,"{""slots"":[""a"",""b""]}",`,
      `"HS-200 ""pro""",8AB3C2D1,2.1,+33612345678,Bo,"{`,
      `""x"": 1}",`,
      `HS-100,${imei("35000000000003")},1.0.0,,,,`,
    ].join("\r\n");
    const r = parseProvisioningBatch(csv, "csv");
    expect(r.errors).toEqual([]);
    expect(r.accepted.map((a) => [a.line, a.model, a.hardwareIdKind])).toEqual([
      [2, "HS-100", "imei"],
      [3, "HS-100", "imei"],
      [4, 'HS-200 "pro"', "esn"],
      [6, "HS-100", "imei"],
    ]);
    expect(r.accepted[0]!.owner).toBe("Ada, Ltd");
    expect(r.accepted[0]!.staticKey).toEqual(new Uint8Array(32).fill(7));
    expect(r.accepted[1]!.staticKey).toBeNull();
    expect(r.accepted[1]!.memoryLayout).toBe('{"slots":["a","b"]}');
    expect(r.accepted[2]!.memoryLayout).toBe('{"x":1}');
  });

  it("reports each bad row with its line and code; the good rows still pass", () => {
    const good = imei("35000000000010");
    const csv = [
      HEADER,
      `M,${good},1,,,,`,
      `M,490154203237519,1,,,,`, // bad Luhn
      `M,${imei("35000000000011")},1,+12,,,`, // bad msisdn
      `M,${good},1,,,,`, // duplicate within the batch
      ``,
      `M,${imei("35000000000012")},1,,,not json,`,
      `M,${imei("35000000000013")},1,,,,shortkey`,
      `,${imei("35000000000014")},1,,,,`, // no model
      `M,${imei("35000000000015")},1`, // too few fields
      `M,${imei("35000000000016")},2,,,,`,
    ].join("\n");
    const r = parseProvisioningBatch(csv, "csv");
    expect(r.accepted.map((a) => a.line)).toEqual([2, 11]);
    expect(r.errors.map((e) => [e.line, e.code])).toEqual([
      [3, "provisioning.invalid_hardware_id"],
      [4, "provisioning.invalid_msisdn"],
      [5, "provisioning.duplicate_in_batch"],
      [7, "provisioning.invalid_memory_layout"],
      [8, "provisioning.invalid_static_key"],
      [9, "provisioning.missing_field"],
      [10, "provisioning.invalid_row"],
    ]);
    expect(r.errors[2]!.message).toMatch(/line 2/);
  });

  it("refuses a file without the required header or with an unterminated quote", () => {
    expect(() => parseProvisioningBatch("foo,bar\n1,2", "csv")).toThrow(
      expect.objectContaining({ code: "provisioning.invalid_header" }),
    );
    expect(() => parseProvisioningBatch(`${HEADER}\nM,"x,1`, "csv")).toThrow(
      expect.objectContaining({ code: "provisioning.malformed_csv" }),
    );
    expect(() => parseProvisioningBatch(HEADER, "csv")).toThrow(
      expect.objectContaining({ code: "provisioning.empty_batch" }),
    );
  });
});

describe("JSON batches", () => {
  it("takes an array of objects; errors name the element's position", () => {
    const r = parseProvisioningBatch(
      JSON.stringify([
        { model: "M", hardware_id: imei("35000000000020"), firmware_version: "1", memory_layout: { a: 1 } },
        { model: "M", hardware_id: "nope", firmware_version: "1" },
        "not an object",
        { model: "M", hardware_id: imei("35000000000021"), firmware_version: "1", colour: "red" },
        { model: "M", hardware_id: imei("35000000000022"), firmware_version: "1", key_source: "sim" },
      ]),
      "json",
    );
    expect(r.accepted.map((a) => [a.line, a.keySource, a.memoryLayout])).toEqual([
      [1, "file", '{"a":1}'],
      [5, "sim", "{}"],
    ]);
    expect(r.errors.map((e) => [e.line, e.code])).toEqual([
      [2, "provisioning.invalid_hardware_id"],
      [3, "provisioning.invalid_row"],
      [4, "provisioning.invalid_row"],
    ]);
  });
  it("refuses text that is not a JSON array", () => {
    expect(() => parseProvisioningBatch("{", "json")).toThrow(
      expect.objectContaining({ code: "provisioning.invalid_json" }),
    );
    expect(() => parseProvisioningBatch("{}", "json")).toThrow(
      expect.objectContaining({ code: "provisioning.invalid_json" }),
    );
  });
});
