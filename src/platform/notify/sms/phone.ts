/**
 * Phone numbers enter as people type them and leave as E.164 ("+447911123456"): every SMS
 * gateway, table and route speaks E.164 only. libphonenumber-js's "max" metadata is the one
 * that knows which number ranges are assigned; a number it does not call valid is refused.
 */
import { type CountryCode, parsePhoneNumberWithError } from "libphonenumber-js/max";
import { HandsafeError } from "../../../core/errors.ts";

/** The longest input we try to parse: E.164 allows 15 digits; this leaves room for spacing. */
const MAX_INPUT_LENGTH = 40;

/**
 * Valid inputs already normalised, by default country and input: a number is parsed once on its
 * way in and again by every layer it passes (messaging, the SMS limiter, the gateway), and a parse
 * with the "max" metadata costs tens of microseconds. The answer depends on the input alone, so
 * remembering it changes nothing; the oldest entries go first past MAX_REMEMBERED.
 */
const remembered = new Map<string, string>();
const MAX_REMEMBERED = 4096;

/**
 * `input` as E.164, or HandsafeError("phone.invalid"). Without a leading "+" the number is read
 * as a national number of `defaultCountry` (ISO 3166-1 alpha-2, e.g. "GB").
 */
export function normalisePhoneNumber(input: string, defaultCountry?: string): string {
  if (typeof input !== "string" || input.length === 0 || input.length > MAX_INPUT_LENGTH)
    throw invalid(input, "expected a phone number of at most 40 characters");
  const key = `${defaultCountry ?? ""}\u0000${input}`;
  const known = remembered.get(key);
  if (known !== undefined) return known;
  let parsed: ReturnType<typeof parsePhoneNumberWithError>;
  try {
    parsed = parsePhoneNumberWithError(
      input,
      defaultCountry === undefined ? undefined : { defaultCountry: defaultCountry as CountryCode },
    );
  } catch (e) {
    throw invalid(input, e instanceof Error ? e.message : "unparseable", e);
  }
  if (!parsed.isValid()) throw invalid(input, "not an assigned number range");
  if (remembered.size >= MAX_REMEMBERED) remembered.delete(remembered.keys().next().value as string);
  remembered.set(key, parsed.number);
  return parsed.number;
}

/** True when `input` is already a valid number written in E.164 form. */
export function isE164(input: string): boolean {
  if (!/^\+[1-9][0-9]{6,14}$/.test(input)) return false;
  try {
    return normalisePhoneNumber(input) === input;
  } catch {
    return false;
  }
}

function invalid(input: unknown, why: string, cause?: unknown): HandsafeError {
  const shown = typeof input === "string" ? JSON.stringify(input.slice(0, MAX_INPUT_LENGTH)) : typeof input;
  return new HandsafeError("phone.invalid", `${shown} is not a valid phone number (${why})`, {
    status: 400,
    ...(cause === undefined ? {} : { cause }),
  });
}
