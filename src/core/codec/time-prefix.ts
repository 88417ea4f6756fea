/**
 * A time-ordered prefix for ids: epoch milliseconds as 9 base-36 digits, lower case, zero-padded.
 * Digits sort before letters in byte order, so these prefixes sort as the times they encode until
 * the year 5188 (36^9 ms), and an id that starts with one lands at the end of a B-tree index
 * instead of on a random page of it.
 */
export const TIME_PREFIX_LENGTH = 9;

export function timePrefix(epochMillis: number): string {
  if (!Number.isSafeInteger(epochMillis) || epochMillis < 0 || epochMillis >= 36 ** TIME_PREFIX_LENGTH)
    throw new RangeError(`timePrefix: ${epochMillis} is not an epoch millisecond count it can write`);
  return epochMillis.toString(36).padStart(TIME_PREFIX_LENGTH, "0");
}
