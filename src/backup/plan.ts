/**
 * What a backup run does, decided without I/O (docs/protocols/backup.md §4): relative to the parent
 * snapshot, each selected item is an Add, a Replace or a Copy, and the parent's other items Deleted.
 */
import type { StoredItem } from "./data-store-types.ts";
import type { BackupEnvelope, EnvelopeItem } from "./protocol.ts";

export interface PlannedItem {
  item: StoredItem;
  id: string;
  hash: Uint8Array;
}

export type PlanStep =
  | { command: "Copy"; planned: PlannedItem; parent: EnvelopeItem }
  | { command: "Add" | "Replace"; planned: PlannedItem };

/**
 * Relative to the parent snapshot: an item whose id and HMAC hash are the parent's is carried over
 * (Copy), a known id with another hash is Replaced, an unknown one Added; the parent's ids not selected
 * now are Deleted (information only — the envelope lists the whole snapshot anyway).
 */
export function planBackup(
  current: readonly PlannedItem[],
  parent: BackupEnvelope | undefined,
): { steps: PlanStep[]; deleted: string[] } {
  const previous = new Map((parent?.items ?? []).map((i) => [i.id, i] as const));
  const steps: PlanStep[] = [];
  const seen = new Set<string>();
  for (const planned of current) {
    seen.add(planned.id);
    const before = previous.get(planned.id);
    if (before === undefined) steps.push({ command: "Add", planned });
    else if (bytesEqual(before.hash, planned.hash) && before.size === planned.item.size)
      steps.push({ command: "Copy", planned, parent: before });
    else steps.push({ command: "Replace", planned });
  }
  const deleted = [...previous.keys()].filter((id) => !seen.has(id));
  return { steps, deleted };
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/** The same members, whatever the order or repeats. */
export function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every((x) => sb.has(x));
}
