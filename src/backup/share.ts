/**
 * Sharing (docs/protocols/backup.md §7): the owner unwraps each item's file key and writes a new age
 * header for the owner plus the users shared with; the payloads and blobs stay as they are. The
 * share is a Kind=share envelope naming them in SharedWith, listed like any backup.
 */
import { backupError } from "./client-http.ts";
import type { ClientContext, ProgressListener } from "./client-types.ts";
import { openName, rewrapHeader, unwrapItemKey } from "./item-crypto.ts";
import { backupUri, type EnvelopeItem, newBackupId } from "./protocol.ts";
import { compileSelection, type Selection } from "./selection.ts";

export interface ShareInput {
  backupId: string;
  /** Handles, or `acct_…` account ids (checked against the directory's key either way). */
  with: readonly string[];
  items?: Selection;
  onProgress?: ProgressListener;
}

export interface ShareResult {
  backupId: string;
  sharedWith: string[];
  items: number;
}

/**
 * Shares a backup (or the items `items` picks) with users of the directory (handles, or account ids for users without one): new headers
 * for the owner plus them around the same file keys, a Kind=share envelope naming them; no payload
 * moves. Returns the share's backup id.
 */
export async function shareBackup(ctx: ClientContext, input: ShareInput): Promise<ShareResult> {
  const users = await Promise.all(input.with.map((h) => ctx.resolve(h)));
  if (users.length === 0) throw backupError("backup.share_invalid", "share with at least one user", 400);
  const { envelope } = await ctx.fetchEnvelope(input.backupId);
  const filter = input.items === undefined ? undefined : compileSelection(input.items);
  const recipients = [...new Set([ctx.identity.recipient, ...users.map((u) => u.recipient)])];
  const items: EnvelopeItem[] = [];
  let n = 0;
  for (const item of envelope.items) {
    n++;
    if (filter !== undefined) {
      const { fileKey } = unwrapItemKey(item.header, ctx.identity);
      const metadata = openName(fileKey, item.id, item.name);
      fileKey.fill(0);
      if (!filter.matches(metadata.path)) continue;
    }
    items.push({ ...item, command: "Copy", header: rewrapHeader(item.header, ctx.identity, recipients) });
    input.onProgress?.({ phase: "share", item: item.id, bytesDone: n, bytesTotal: envelope.items.length });
  }
  const backupId = newBackupId();
  const sharedWith = [...new Set(users.map((u) => u.accountId))];
  await ctx.publish({
    backupId,
    kind: "share",
    createdAt: ctx.clock(),
    parent: envelope.backupId,
    source: { handset: ctx.handsetUri, account: ctx.identity.accountId },
    target: backupUri(backupId),
    recipients,
    sharedWith,
    items,
    deleted: [],
  });
  return { backupId, sharedWith, items: items.length };
}
