/**
 * Manufacturer provisioning batches: CSV (RFC 4180, header row) or JSON (an array of objects) →
 * accepted device records and per-row errors. A bad row rejects nothing else; every error names
 * its line (CSV: the line the record starts on, header = line 1; JSON: the element's 1-based
 * position). Pure, no I/O: the server generates missing static keys and checks the registry.
 */
import { parsePhoneNumberFromString } from "libphonenumber-js";
import { fromBase64urlOfLength } from "../core/codec/base64url.ts";
import { canonicalJson } from "../core/codec/canonical-json.ts";
import { HandsafeError } from "../core/errors.ts";

export const STATIC_KEY_BYTES = 32;
export const MAX_BATCH_ROWS = 10_000;
export const KEY_SOURCES = ["file", "sim", "embedded"] as const;
export type KeySource = (typeof KEY_SOURCES)[number];

export const BATCH_COLUMNS = [
  "model",
  "hardware_id",
  "firmware_version",
  "msisdn",
  "owner",
  "memory_layout",
  "static_key",
] as const;
const REQUIRED_COLUMNS = ["model", "hardware_id", "firmware_version"] as const;
const OPTIONAL_EXTRA_COLUMNS = ["key_source"] as const;

export type HardwareIdKind = "imei" | "esn" | "meid";

export interface DeviceRecordInput {
  line: number;
  model: string;
  hardwareId: string;
  hardwareIdKind: HardwareIdKind;
  firmwareVersion: string;
  /** E.164, or null when the device has no number yet. */
  msisdn: string | null;
  owner: string | null;
  /** Canonical JSON text of an object. */
  memoryLayout: string;
  /** 32 bytes, or null: the server generates one from its CSPRNG. */
  staticKey: Uint8Array | null;
  keySource: KeySource;
}

export interface BatchRowError {
  line: number;
  code: string;
  message: string;
}

export interface BatchParseResult {
  format: "csv" | "json";
  accepted: DeviceRecordInput[];
  errors: BatchRowError[];
}

/** Luhn (ISO/IEC 7812-1 annex B), the IMEI check digit of 3GPP TS 23.003 §6.2.1. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/**
 * IMEI: 15 decimal digits whose last is the Luhn check digit. ESN: 8 hex digits (32 bits).
 * MEID: 14 hex digits. Hex is normalised to upper case.
 */
export function parseHardwareId(raw: string): { id: string; kind: HardwareIdKind } {
  const v = raw.trim();
  if (/^[0-9]{15}$/.test(v)) {
    if (!luhnValid(v))
      throw new HandsafeError("provisioning.invalid_hardware_id", `IMEI ${v} fails its Luhn check digit`);
    return { id: v, kind: "imei" };
  }
  if (/^[0-9A-Fa-f]{8}$/.test(v)) return { id: v.toUpperCase(), kind: "esn" };
  if (/^[0-9A-Fa-f]{14}$/.test(v)) return { id: v.toUpperCase(), kind: "meid" };
  throw new HandsafeError(
    "provisioning.invalid_hardware_id",
    "hardware_id must be an IMEI (15 digits, Luhn), an ESN (8 hex) or a MEID (14 hex)",
  );
}

/** E.164 with a valid number plan (libphonenumber), e.g. "+4915112345678". */
export function parseMsisdn(raw: string): string {
  const v = raw.trim();
  const n = /^\+[1-9][0-9]{6,14}$/.test(v) ? parsePhoneNumberFromString(v) : undefined;
  if (!n?.isValid() || n.number !== v)
    throw new HandsafeError(
      "provisioning.invalid_msisdn",
      `msisdn ${JSON.stringify(v)} is not a valid E.164 number`,
    );
  return v;
}

function text(value: unknown, field: string, opts: { required: boolean; max: number }): string | null {
  if (value === undefined || value === null || value === "") {
    if (opts.required) throw new HandsafeError("provisioning.missing_field", `${field} is required`);
    return null;
  }
  if (typeof value !== "string")
    throw new HandsafeError("provisioning.invalid_field", `${field} must be a string`);
  const v = value.trim();
  if (v.length === 0 && opts.required)
    throw new HandsafeError("provisioning.missing_field", `${field} is required`);
  if (v.length > opts.max || hasControlCharacter(v))
    throw new HandsafeError(
      "provisioning.invalid_field",
      `${field} must be at most ${opts.max} printable characters`,
    );
  return v.length === 0 ? null : v;
}

function memoryLayout(value: unknown): string {
  if (value === undefined || value === null || value === "") return "{}";
  let parsed: unknown = value;
  if (typeof value === "string") {
    try {
      parsed = JSON.parse(value);
    } catch {
      throw new HandsafeError("provisioning.invalid_memory_layout", "memory_layout is not JSON");
    }
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new HandsafeError("provisioning.invalid_memory_layout", "memory_layout must be a JSON object");
  let canonical: string;
  try {
    canonical = canonicalJson(parsed);
  } catch {
    throw new HandsafeError("provisioning.invalid_memory_layout", "memory_layout holds non-integer numbers");
  }
  if (canonical.length > 4096)
    throw new HandsafeError("provisioning.invalid_memory_layout", "memory_layout exceeds 4096 characters");
  return canonical;
}

function staticKey(value: unknown): Uint8Array | null {
  if (value === undefined || value === null || value === "") return null;
  if (typeof value !== "string")
    throw new HandsafeError("provisioning.invalid_static_key", "static_key must be base64url text");
  try {
    return fromBase64urlOfLength(value.trim(), STATIC_KEY_BYTES, "static_key");
  } catch {
    throw new HandsafeError(
      "provisioning.invalid_static_key",
      "static_key must be 32 bytes in unpadded base64url",
    );
  }
}

function hasControlCharacter(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** One row (as field → value) to a record; throws the row's HandsafeError. */
export function parseDeviceRow(row: Record<string, unknown>, line: number): DeviceRecordInput {
  const hw = parseHardwareId(text(row["hardware_id"], "hardware_id", { required: true, max: 32 })!);
  const msisdn = text(row["msisdn"], "msisdn", { required: false, max: 16 });
  const source = text(row["key_source"], "key_source", { required: false, max: 16 }) ?? "file";
  if (!(KEY_SOURCES as readonly string[]).includes(source))
    throw new HandsafeError(
      "provisioning.invalid_key_source",
      `key_source must be one of ${KEY_SOURCES.join(", ")}`,
    );
  return {
    line,
    model: text(row["model"], "model", { required: true, max: 100 })!,
    hardwareId: hw.id,
    hardwareIdKind: hw.kind,
    firmwareVersion: text(row["firmware_version"], "firmware_version", { required: true, max: 64 })!,
    msisdn: msisdn === null ? null : parseMsisdn(msisdn),
    owner: text(row["owner"], "owner", { required: false, max: 200 }),
    memoryLayout: memoryLayout(row["memory_layout"]),
    staticKey: staticKey(row["static_key"]),
    keySource: source as KeySource,
  };
}

/** Parses a whole batch. File-level problems (no header, bad JSON, too many rows) throw; row problems are reported. */
export function parseProvisioningBatch(input: string, format: "csv" | "json"): BatchParseResult {
  const rows = format === "csv" ? csvRows(input) : jsonRows(input);
  if (rows.length === 0) throw new HandsafeError("provisioning.empty_batch", "the batch holds no devices");
  if (rows.length > MAX_BATCH_ROWS)
    throw new HandsafeError("provisioning.too_many_rows", `a batch holds at most ${MAX_BATCH_ROWS} devices`, {
      status: 413,
    });
  const accepted: DeviceRecordInput[] = [];
  const errors: BatchRowError[] = [];
  const firstLine = new Map<string, number>();
  for (const { line, fields, error } of rows) {
    try {
      if (error) throw error;
      const record = parseDeviceRow(fields, line);
      const earlier = firstLine.get(record.hardwareId);
      if (earlier !== undefined)
        throw new HandsafeError(
          "provisioning.duplicate_in_batch",
          `hardware_id ${record.hardwareId} already appears on line ${earlier}`,
        );
      firstLine.set(record.hardwareId, line);
      accepted.push(record);
    } catch (e) {
      if (!(e instanceof HandsafeError)) throw e;
      errors.push({ line, code: e.code, message: e.message });
    }
  }
  return { format, accepted, errors };
}

interface RawRow {
  line: number;
  fields: Record<string, unknown>;
  error?: HandsafeError;
}

function jsonRows(input: string): RawRow[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(input);
  } catch {
    throw new HandsafeError("provisioning.invalid_json", "the batch is not valid JSON");
  }
  if (!Array.isArray(parsed))
    throw new HandsafeError("provisioning.invalid_json", "a JSON batch is an array of device objects");
  return parsed.map((el, i) => {
    if (typeof el !== "object" || el === null || Array.isArray(el))
      return {
        line: i + 1,
        fields: {},
        error: new HandsafeError("provisioning.invalid_row", "each element must be an object"),
      };
    const unknown = Object.keys(el).filter(
      (k) => !(BATCH_COLUMNS as readonly string[]).includes(k) && k !== "key_source",
    );
    return {
      line: i + 1,
      fields: el as Record<string, unknown>,
      ...(unknown.length
        ? { error: new HandsafeError("provisioning.invalid_row", `unknown fields: ${unknown.join(", ")}`) }
        : {}),
    };
  });
}

/** RFC 4180 records with the line each starts on; quoted fields may hold commas, quotes and newlines. */
export function splitCsv(input: string): Array<{ line: number; cells: string[] }> {
  const s = input.startsWith("\uFEFF") ? input.slice(1) : input;
  const records: Array<{ line: number; cells: string[] }> = [];
  let line = 1;
  let i = 0;
  while (i < s.length) {
    const start = line;
    const cells: string[] = [];
    let cell = "";
    for (;;) {
      if (s[i] === '"') {
        i++;
        for (;;) {
          if (i >= s.length)
            throw new HandsafeError(
              "provisioning.malformed_csv",
              `unterminated quoted field starting on line ${start}`,
            );
          if (s[i] === '"') {
            if (s[i + 1] === '"') {
              cell += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (s[i] === "\n") line++;
          cell += s[i++];
        }
        if (i < s.length && s[i] !== "," && s[i] !== "\n" && s[i] !== "\r")
          throw new HandsafeError("provisioning.malformed_csv", `text after a closing quote on line ${line}`);
      } else {
        while (i < s.length && s[i] !== "," && s[i] !== "\n" && s[i] !== "\r") {
          if (s[i] === '"')
            throw new HandsafeError(
              "provisioning.malformed_csv",
              `a quote inside an unquoted field on line ${line}`,
            );
          cell += s[i++];
        }
      }
      cells.push(cell);
      cell = "";
      if (s[i] === ",") {
        i++;
        continue;
      }
      if (s[i] === "\r") i++;
      if (s[i] === "\n") i++;
      line++;
      break;
    }
    if (!(cells.length === 1 && cells[0]!.trim() === "")) records.push({ line: start, cells });
  }
  return records;
}

function csvRows(input: string): RawRow[] {
  const records = splitCsv(input);
  const header = records.shift();
  if (!header) throw new HandsafeError("provisioning.invalid_header", "the CSV has no header row");
  const names = header.cells.map((c) => c.trim().toLowerCase());
  const allowed = [...BATCH_COLUMNS, ...OPTIONAL_EXTRA_COLUMNS] as readonly string[];
  const unknown = names.filter((n) => !allowed.includes(n));
  const missing = REQUIRED_COLUMNS.filter((n) => !names.includes(n));
  if (unknown.length || missing.length || new Set(names).size !== names.length)
    throw new HandsafeError(
      "provisioning.invalid_header",
      `line ${header.line}: header must name the columns ${BATCH_COLUMNS.join(",")} (optional: key_source)` +
        (missing.length ? `; missing ${missing.join(", ")}` : "") +
        (unknown.length ? `; unknown ${unknown.join(", ")}` : ""),
    );
  return records.map(({ line, cells }) => {
    if (cells.length !== names.length)
      return {
        line,
        fields: {},
        error: new HandsafeError(
          "provisioning.invalid_row",
          `expected ${names.length} fields, found ${cells.length}`,
        ),
      };
    return { line, fields: Object.fromEntries(names.map((n, k) => [n, cells[k]])) };
  });
}
