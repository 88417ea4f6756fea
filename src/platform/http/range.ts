/** HTTP Range requests (RFC 9110 §14), for every route that serves blobs. */

/**
 * One byte range (RFC 9110 §14.1.2): "bytes=a-", "bytes=a-b" (b past the end means to the end),
 * "bytes=-n" (the last n). Undefined means "send everything": no Range, another unit, several
 * ranges or a malformed one (a server may ignore Range, §14.2). A start past the end → unsatisfiable.
 */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | "unsatisfiable" | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d{0,15})-(\d{0,15})$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== "" && Number(m[2]) < start) return undefined;
  if (start >= size) return "unsatisfiable";
  return { start, end };
}
