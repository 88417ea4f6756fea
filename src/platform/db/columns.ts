import type { DatabaseDialect } from "./database.ts";

/**
 * Portable column conventions: one migration text serves SQLite and PostgreSQL.
 *
 * | value     | SQLite   | PostgreSQL | JS                                      |
 * |-----------|----------|------------|-----------------------------------------|
 * | bytes     | blob     | bytea      | write Uint8Array; read with toBytes()   |
 * | time      | bigint   | bigint     | epoch milliseconds (number)             |
 * | boolean   | integer  | integer    | 0 / 1 (fromBoolean / toBoolean)         |
 * | JSON      | text     | text       | canonical JSON text                     |
 */

export function bytesType(dialect: DatabaseDialect): "blob" | "bytea" {
  return dialect === "sqlite" ? "blob" : "bytea";
}

/** Epoch milliseconds. PostgreSQL int8 is parsed to number by openDatabase. */
export const timeType = "bigint";
export const booleanType = "integer";
export const jsonType = "text";

/**
 * Both drivers return bytes as a Node Buffer; callers get a plain Uint8Array view of the same
 * memory (no copy), so `instanceof Buffer` tricks and Buffer-only methods never leak upward.
 */
export function toBytes(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError("expected a bytes column value");
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

export function toBytesOrNull(value: unknown): Uint8Array | null {
  return value === null || value === undefined ? null : toBytes(value);
}

export function fromBoolean(value: boolean): 0 | 1 {
  return value ? 1 : 0;
}

export function toBoolean(value: unknown): boolean {
  if (value === 1 || value === true) return true;
  if (value === 0 || value === false) return false;
  throw new TypeError("expected a 0/1 boolean column value");
}
