/** RFC 9421 §2.5: the signature base, the exact bytes a signature is computed over. */
import { signatureError } from "./errors.ts";
import type { SignedRequestView } from "./request-view.ts";
import { type InnerList, type Parameters, serializeInnerList, serializeItem } from "./structured-fields.ts";

/** RFC 9421 §2.2 (derived components) and §2.1 (fields), for one component identifier. */
export function componentValue(view: SignedRequestView, name: string): string {
  switch (name) {
    case "@method":
      return view.method;
    case "@authority":
      return view.authority;
    case "@scheme":
      if (!view.scheme) throw signatureError("signature.malformed", "@scheme is unknown for this request");
      return view.scheme.toLowerCase();
    case "@target-uri":
      if (!view.scheme) throw signatureError("signature.malformed", "@target-uri needs the scheme");
      return `${view.scheme}://${view.authority}${view.path}${view.query === "" ? "" : `?${view.query}`}`;
    case "@request-target":
      return `${view.path}${view.query === "" ? "" : `?${view.query}`}`;
    case "@path":
      return view.path === "" ? "/" : view.path;
    case "@query":
      return `?${view.query}`;
    default: {
      if (name.startsWith("@"))
        throw signatureError("signature.malformed", `derived component ${name} is not supported`);
      const value = view.headers[name];
      if (value === undefined)
        throw signatureError("signature.malformed", `covered field ${name} is not in the request`);
      // §2.1: leading and trailing whitespace removed; obs-fold is not allowed in values.
      const trimmed = value.trim();
      if (/[\r\n]/.test(trimmed)) throw signatureError("signature.malformed", `field ${name} spans lines`);
      return trimmed;
    }
  }
}

/**
 * One line per covered component, then the "@signature-params" line whose value is the serialised
 * Signature-Input member (`signatureParams`, what follows "<label>=" in that header). Lines are joined
 * by LF with no trailing LF. A component covered twice is refused (§2.5 step 1).
 */
export function signatureBase(
  view: SignedRequestView,
  components: readonly string[],
  params: Parameters,
): { base: string; signatureParams: string } {
  const list: InnerList = { items: components.map((c) => ({ value: c, params: [] })), params };
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const name of components) {
    if (seen.has(name)) throw signatureError("signature.malformed", `component ${name} covered twice`);
    seen.add(name);
    lines.push(`${serializeItem({ value: name, params: [] })}: ${componentValue(view, name)}`);
  }
  const signatureParams = serializeInnerList(list);
  lines.push(`"@signature-params": ${signatureParams}`);
  return { base: lines.join("\n"), signatureParams };
}
