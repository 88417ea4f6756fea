/**
 * What an RFC 9421 signature covers of a request, as signer and verifier both see it: the parts the
 * derived components (§2.2) are made of, and the header fields (§2.1).
 */

export interface SignedRequestView {
  method: string;
  /** "https" or "http" (only @target-uri and @scheme use it). */
  scheme?: string;
  /** host[:port], lower-case, default port omitted (RFC 9421 §2.2.3). */
  authority: string;
  /** Absolute path as sent, "/" when empty. */
  path: string;
  /** The query without its "?", "" when absent. */
  query: string;
  /** Lower-case field names; repeated fields already joined with ", ". */
  headers: Readonly<Record<string, string | undefined>>;
}

/** RFC 9421 §2.2.3: lower-case host, default port removed. */
export function normaliseAuthority(host: string, scheme: string): string {
  const lower = host.trim().toLowerCase();
  if (scheme === "https" && lower.endsWith(":443")) return lower.slice(0, -4);
  if (scheme === "http" && lower.endsWith(":80")) return lower.slice(0, -3);
  return lower;
}

/** The view of a request to an absolute URL: what a client signs, or a receiver that knows its URL checks. */
export function requestViewOfUrl(
  method: string,
  url: string,
  headers: Readonly<Record<string, string | undefined>>,
): SignedRequestView {
  const u = new URL(url);
  const scheme = u.protocol.replace(/:$/, "");
  const lowered: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(headers)) lowered[k.toLowerCase()] = v;
  return {
    method,
    scheme,
    authority: normaliseAuthority(u.host, scheme),
    path: u.pathname === "" ? "/" : u.pathname,
    query: u.search.replace(/^\?/, ""),
    headers: lowered,
  };
}
