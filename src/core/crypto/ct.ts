/**
 * Equality whose running time depends on the lengths only, never on where the inputs differ
 * (RFC 8439 §4: compare tags in constant time). Written as a plain XOR-accumulate loop so that it
 * is the same code on every platform; lengths are public, so a length mismatch returns at once.
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
