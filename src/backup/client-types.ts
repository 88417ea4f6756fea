/**
 * The backup SDK's public types (docs/protocols/backup.md §5–§7) and the context its parts share.
 * Types only: nothing here runs.
 */
import type { StreamingHttpTransport } from "../handset/http-client.ts";
import type { UnlockedIdentity } from "../handset/identity-module.ts";
import type { SignedBackupHttp } from "./client-http.ts";
import type { EnvelopePartLimits } from "./envelope.ts";
import type { BackupEnvelope, BackupSummary, SharedSummary } from "./protocol.ts";

export type { BackupSummary, SharedSummary };

// --- public types ------------------------------------------------------------------------------

/**
 * Progress of a run. `hash`, `seal` (first pass), `download`: bytes of plaintext over the whole run's;
 * `upload` and the re-seal of a changed item: that item's payload / plaintext bytes.
 */
export interface BackupProgress {
  phase: "scan" | "hash" | "seal" | "upload" | "envelope" | "download" | "verify" | "commit" | "share";
  /** The item's path (its id before the path is known). */
  item?: string;
  bytesDone: number;
  bytesTotal: number;
}
export type ProgressListener = (p: BackupProgress) => void;

export interface DirectoryEntry {
  /** The user's handle; null for a user found by account id who has none. */
  handle: string | null;
  accountId: string;
  recipient: string;
  /** base64url Ed25519 public key; its SHA-256 is the account id (checked on lookup). */
  signingKey: string;
}

export interface BackupResult {
  backupId: string;
  parent?: string;
  added: number;
  replaced: number;
  copied: number;
  deleted: number;
  /** Blobs uploaded by this run (unchanged and inline items upload none). */
  uploads: number;
  /** Payload bytes sent in PATCH requests (a resumed upload counts each byte once). */
  bytesUploaded: number;
}

export interface RestoreResult {
  backupId: string;
  owner: string;
  items: Array<{ id: string; path: string; size: number }>;
}

export interface BackupClientOptions {
  /** e.g. the test server's URL; a path prefix is allowed. */
  baseUrl: string;
  /** Pinned node transport (createNodeTransport({pin})) or any streaming transport. */
  transport: StreamingHttpTransport;
  identity: UnlockedIdentity;
  /** `<Source><LocURI>`; default `handset:` + the account id. */
  handsetUri?: string;
  /** Largest PATCH body (default 4 MiB; two are in memory, one sealing while one is sent). */
  uploadChunkBytes?: number;
  /** PATCH attempts per blob before giving up (default 5). */
  uploadAttempts?: number;
  /**
   * How large one message of an envelope may be (default: the server reader's limits, 16 MiB and
   * 200 000 elements); a larger envelope goes in parts (§4 Parts). Smaller limits only make more parts.
   */
  envelopePartLimits?: EnvelopePartLimits;
  /** Signature `created` clock. */
  clock?: () => number;
}

/** What upload.ts, restore.ts, share.ts and run-backup.ts need of the client. */
export interface ClientContext {
  readonly http: SignedBackupHttp;
  readonly identity: UnlockedIdentity;
  readonly handsetUri: string;
  readonly clock: () => number;
  /** Largest PATCH body: the upload's memory bound. */
  readonly uploadChunkBytes: number;
  /** PATCH attempts per blob before giving up. */
  readonly uploadAttempts: number;
  /** How large one message of an envelope may be (§4 Parts). */
  readonly envelopePartLimits: EnvelopePartLimits;
  /** A user named by handle or by account id, checked against the directory's key. */
  resolve(who: string): Promise<DirectoryEntry>;
  fetchEnvelope(backupId: string, ownerKey?: Uint8Array): Promise<{ envelope: BackupEnvelope }>;
  publish(envelope: BackupEnvelope): Promise<void>;
  list(): Promise<BackupSummary[]>;
}
