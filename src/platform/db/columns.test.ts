import { describe, expect, it } from "vitest";
import { bytesType, fromBoolean, toBoolean, toBytes, toBytesOrNull } from "./columns.ts";
import { parseDatabaseUrl, redactDatabaseUrl } from "./url.ts";

describe("column conventions", () => {
  it("bytes are blob on SQLite, bytea on PostgreSQL", () => {
    expect(bytesType("sqlite")).toBe("blob");
    expect(bytesType("postgres")).toBe("bytea");
  });

  it("toBytes gives a plain Uint8Array view of a Buffer, without copying", () => {
    const buf = Buffer.from([1, 2, 3, 4]).subarray(1, 3);
    const bytes = toBytes(buf);
    expect(Buffer.isBuffer(bytes)).toBe(false);
    expect([...bytes]).toEqual([2, 3]);
    buf[0] = 9;
    expect(bytes[0]).toBe(9);
    expect(toBytesOrNull(null)).toBeNull();
    expect(() => toBytes("AQI")).toThrow(TypeError);
  });

  it("booleans are 0/1", () => {
    expect(fromBoolean(true)).toBe(1);
    expect(toBoolean(0)).toBe(false);
    expect(() => toBoolean(2)).toThrow(TypeError);
  });
});

describe("database URLs", () => {
  it("reads the three forms", () => {
    expect(parseDatabaseUrl("sqlite::memory:")).toEqual({ dialect: "sqlite", path: ":memory:" });
    expect(parseDatabaseUrl("sqlite:data/x.sqlite")).toEqual({ dialect: "sqlite", path: "data/x.sqlite" });
    expect(parseDatabaseUrl("postgres://h/db")).toMatchObject({ dialect: "postgres" });
    expect(parseDatabaseUrl("postgresql://h/db")).toMatchObject({ dialect: "postgres" });
  });

  it("refuses others with config.invalid and never shows a password", () => {
    expect(() => parseDatabaseUrl("mysql://h/db")).toThrow(
      expect.objectContaining({ code: "config.invalid" }),
    );
    expect(redactDatabaseUrl("postgres://u:pw@h/db")).toBe("postgres://u:***@h/db");
  });
});
