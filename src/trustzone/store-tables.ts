/**
 * The trust zone's tables (migrations.ts creates them) as Kysely sees them, and the small column
 * helpers every store-*.ts module shares. Re-exported (types only) by store.ts.
 */
import type { Kysely } from "kysely";
export interface TrustzoneTables {
  tsm_signing_keys: {
    kid: string;
    role: string | null;
    public_key: Uint8Array;
    sealed_seed: Uint8Array;
    created_at: number;
    retired_at: number | null;
  };
  tsm_managers: {
    id: string;
    name: string;
    identification_code: string;
    certification: string;
    memory_bytes: number;
    applications: string;
    x25519_public_key: Uint8Array;
    api_key_hash: string;
    webhook_url: string | null;
    sealed_webhook_secret: Uint8Array | null;
    state: string;
    reason: string | null;
    reviewed_by: string | null;
    created_at: number;
    updated_at: number;
  };
  tsm_applications: { manager_id: string; app_id: string; sha256: string; state: string; updated_at: number };
  tsm_zones: {
    id: string;
    handset_id: string | null;
    epoch: number;
    state: string;
    user_info_hash: string | null;
    sealed_user_info: Uint8Array | null;
    sealed_zmk: Uint8Array;
    containers: number;
    signal_seq: number;
    personalised_at: number | null;
    reset_at: number | null;
    reset_acknowledged_at: number | null;
    created_by: string;
    created_at: number;
    updated_at: number;
  };
  tsm_containers: {
    zone_id: string;
    idx: number;
    state: string;
    manager_id: string | null;
    jti: string | null;
    not_after: number | null;
    max_attempts: number | null;
    bytes: number;
    updated_at: number;
  };
  tsm_tokens: {
    jti: string;
    manager_id: string;
    zone_id: string;
    epoch: number;
    containers: string;
    limits: string;
    max_uses: number;
    uses: number;
    exp: number;
    issued_by: string;
    issued_at: number;
    last_used_at: number | null;
    revoked_at: number | null;
  };
  tsm_signals: {
    zone_id: string;
    seq: number;
    epoch: number;
    type: string;
    body: string;
    mac: string;
    created_at: number;
    applied_at: number | null;
  };
  tsm_relay: {
    id: string;
    zone_id: string;
    epoch: number;
    manager_id: string;
    idx: number;
    op: string;
    name: string | null;
    command: string;
    package: Uint8Array | null;
    proof: string;
    state: string;
    result: string | null;
    result_package: Uint8Array | null;
    error_code: string | null;
    created_at: number;
    updated_at: number;
  };
  audit_log: {
    seq: number;
    at: number;
    actor: string;
    action: string;
    subject: string | null;
    outcome: string;
    details: string;
  };
}

export type Db = Kysely<TrustzoneTables>;

export const n = (v: unknown): number => Number(v);
export const nOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
export const changed = (r: { numUpdatedRows: bigint }) => Number(r.numUpdatedRows);
