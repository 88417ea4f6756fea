/**
 * Canonical JSON for signing: object keys sorted by UTF-16 code unit, no whitespace, no
 * non-finite numbers, no undefined. The same bytes on every side, so a signature over a document
 * is a signature over its meaning (RFC 8785 for the subset we use: strings, safe integers,
 * booleans, null, arrays, objects).
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isSafeInteger(value)) throw new TypeError("canonical JSON allows only safe integers");
      return String(value);
    case "object": {
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
      // sort()'s default order compares UTF-16 code units, the order RFC 8785 asks for.
      const record = value as Record<string, unknown>;
      let out = "";
      for (const key of Object.keys(record).sort()) {
        const v = record[key];
        if (v === undefined) continue;
        out += `${out === "" ? "" : ","}${JSON.stringify(key)}:${canonicalJson(v)}`;
      }
      return `{${out}}`;
    }
    default:
      throw new TypeError(`canonical JSON cannot encode ${typeof value}`);
  }
}
