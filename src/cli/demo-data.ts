/** Made-up but valid identifiers for the demos' simulated handsets. */
import { randomBytes } from "../core/crypto/random.ts";
import { luhnValid } from "../management/batch.ts";

const digits = (n: number) => Array.from(randomBytes(n), (b) => b % 10).join("");

/** A Luhn-valid IMEI (3GPP TS 23.003 §6.2.1): "35", 12 random digits, the check digit. */
export function randomImei(): string {
  const body = `35${digits(12)}`;
  for (let d = 0; d < 10; d++) if (luhnValid(`${body}${d}`)) return `${body}${d}`;
  throw new Error("unreachable: one check digit fits every body");
}

/** A German mobile number (+49 151 …), valid for libphonenumber. */
export function randomMobileNumber(): string {
  return `+49151${digits(8)}`;
}
