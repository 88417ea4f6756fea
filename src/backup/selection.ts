/**
 * Backup selection (docs/protocols/backup.md §2): a list of rules, each `{ kind }`, `{ item: path }`
 * or `{ pattern: glob }`, where `*` matches within one path segment and `**` any number of whole
 * segments (zero included). A rule with `exclude: true` removes what it matches, applied after every
 * including rule, whatever the order of the list. Pure: the CLI and the SDK parse the same rules.
 */
import { HandsafeError } from "../core/errors.ts";
import { ITEM_KINDS, type ItemKind } from "./protocol.ts";

export { ITEM_KINDS, type ItemKind };

export type SelectionRule = ({ kind: ItemKind } | { item: string } | { pattern: string }) & {
  exclude?: boolean;
};
export type Selection = readonly SelectionRule[];

/** A selection whose globs are compiled once. */
export interface CompiledSelection {
  readonly rules: Selection;
  matches(path: string): boolean;
}

const invalid = (why: string) =>
  new HandsafeError("backup.selection_invalid", `selection: ${why}`, { status: 400 });

export function isItemKind(value: unknown): value is ItemKind {
  return typeof value === "string" && (ITEM_KINDS as readonly string[]).includes(value);
}

/** The kind of an item path (`files/a/b.jpg` → files), or undefined for a path outside every store. */
export function kindOfPath(path: string): ItemKind | undefined {
  const first = path.split("/", 1)[0];
  return isItemKind(first) ? first : undefined;
}

type Matcher = (segments: readonly string[], path: string) => boolean;

/** One segment of a glob: `*` is any run of characters, everything else is literal. */
function segmentRegExp(segment: string): RegExp {
  const body = segment
    .split("*")
    .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
    .join("[^/]*");
  return new RegExp(`^${body}$`, "u");
}

/** Compiles a glob into a matcher over path segments; `**` spans zero or more whole segments. */
export function compileGlob(pattern: string): (path: string) => boolean {
  if (typeof pattern !== "string" || pattern.length === 0)
    throw invalid("a pattern must be a non-empty string");
  if (pattern.length > 1024) throw invalid("a pattern is at most 1024 characters");
  const parts = pattern.split("/");
  if (parts.some((p) => p.length === 0)) throw invalid(`empty segment in pattern ${JSON.stringify(pattern)}`);
  const compiled = parts.map((p) => (p === "**" ? "**" : segmentRegExp(p)));
  const match = (pi: number, segments: readonly string[], si: number): boolean => {
    if (pi === compiled.length) return si === segments.length;
    const part = compiled[pi]!;
    if (part === "**") {
      // Collapse consecutive `**`: they mean the same as one.
      if (pi + 1 < compiled.length && compiled[pi + 1] === "**") return match(pi + 1, segments, si);
      for (let k = si; k <= segments.length; k++) if (match(pi + 1, segments, k)) return true;
      return false;
    }
    return si < segments.length && part.test(segments[si]!) && match(pi + 1, segments, si + 1);
  };
  return (path) => match(0, path.split("/"), 0);
}

function compileRule(rule: SelectionRule): Matcher {
  if (typeof rule !== "object" || rule === null) throw invalid("a rule must be an object");
  const keys = Object.keys(rule).filter((k) => k !== "exclude");
  if (keys.length !== 1) throw invalid("a rule is exactly one of {kind}, {item}, {pattern}");
  if (rule.exclude !== undefined && typeof rule.exclude !== "boolean") throw invalid("exclude is a boolean");
  if ("kind" in rule) {
    if (!isItemKind(rule.kind)) throw invalid(`unknown kind ${JSON.stringify(rule.kind)}`);
    const kind = rule.kind;
    return (segments) => segments[0] === kind;
  }
  if ("item" in rule) {
    if (typeof rule.item !== "string" || rule.item.length === 0) throw invalid("item is a non-empty path");
    const item = rule.item;
    return (_segments, path) => path === item;
  }
  if ("pattern" in rule) {
    const glob = compileGlob(rule.pattern);
    return (_segments, path) => glob(path);
  }
  throw invalid("a rule is exactly one of {kind}, {item}, {pattern}");
}

/** Checks and compiles the rules (HandsafeError backup.selection_invalid for a malformed one). */
export function compileSelection(rules: Selection): CompiledSelection {
  if (!Array.isArray(rules)) throw invalid("a selection is a list of rules");
  const include: Matcher[] = [];
  const exclude: Matcher[] = [];
  for (const rule of rules) {
    const matcher = compileRule(rule);
    (rule.exclude === true ? exclude : include).push(matcher);
  }
  return {
    rules,
    matches(path) {
      const segments = path.split("/");
      return include.some((m) => m(segments, path)) && !exclude.some((m) => m(segments, path));
    },
  };
}

/** The items of `items` the selection picks, in their order. */
export function selectItems<T extends { path: string }>(items: Iterable<T>, rules: Selection): T[] {
  const selection = compileSelection(rules);
  const out: T[] = [];
  for (const item of items) if (selection.matches(item.path)) out.push(item);
  return out;
}
