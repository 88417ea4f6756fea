/**
 * Firmware versions (docs/protocols/updates-contract.md §Versions): dotted numbers such as "1.4.2",
 * compared numerically part by part, a missing part counting as 0 ("1.2" = "1.2.0"). Pure; no I/O.
 */
import { HandsafeError } from "../core/errors.ts";

/** 1 to 8 parts of 1 to 9 digits: every part is a safe integer, so comparison is exact. */
const VERSION = /^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,7}$/;

/** An inclusive range of installed versions; either end may be open. */
export interface VersionRange {
  min?: string;
  max?: string;
}

/** The numeric parts of a version, or updates.invalid_version (400). */
export function parseVersion(version: string): number[] {
  if (typeof version !== "string" || !VERSION.test(version))
    throw new HandsafeError(
      "updates.invalid_version",
      `version ${JSON.stringify(typeof version === "string" ? version.slice(0, 40) : version)} is not ` +
        "dotted numbers (e.g. 1.4.2; no leading zeros, at most 8 parts)",
      { status: 400 },
    );
  return version.split(".").map(Number);
}

export function isVersion(version: string): boolean {
  return typeof version === "string" && VERSION.test(version);
}

/** Negative when a < b, 0 when equal ("1.2" = "1.2.0"), positive when a > b. */
export function compareVersions(a: string, b: string): number {
  const x = parseVersion(a);
  const y = parseVersion(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/** True when `version` lies within `range` (inclusive at both ends). */
export function satisfies(version: string, range: VersionRange | undefined): boolean {
  parseVersion(version);
  if (!range) return true;
  if (range.min !== undefined && compareVersions(version, range.min) < 0) return false;
  if (range.max !== undefined && compareVersions(version, range.max) > 0) return false;
  return true;
}

/** Checks a range's ends and their order; updates.invalid_version_range (400) when min > max. */
export function checkVersionRange(range: VersionRange): VersionRange {
  if (range.min !== undefined) parseVersion(range.min);
  if (range.max !== undefined) parseVersion(range.max);
  if (range.min !== undefined && range.max !== undefined && compareVersions(range.min, range.max) > 0)
    throw new HandsafeError(
      "updates.invalid_version_range",
      `version range min ${range.min} is above max ${range.max}`,
      { status: 400 },
    );
  return {
    ...(range.min !== undefined ? { min: range.min } : {}),
    ...(range.max !== undefined ? { max: range.max } : {}),
  };
}
