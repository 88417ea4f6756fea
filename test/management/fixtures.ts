import { luhnValid } from "../../src/management/batch.ts";

/** A valid IMEI from a 14-digit body (its Luhn check digit appended). */
export function imei(body: string): string {
  for (let d = 0; d < 10; d++) if (luhnValid(body + d)) return body + d;
  throw new Error("unreachable");
}
