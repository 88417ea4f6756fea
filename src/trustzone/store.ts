/**
 * The zone server's tables and queries (migrations.ts). Every state change that races is one
 * compare-and-set statement (`where state = …`, `uses < max_uses`), so N nodes, or two concurrent
 * requests, apply it once — on SQLite and PostgreSQL alike.
 *
 * One module per group of tables: store-tables.ts (the schema as Kysely sees it), store-managers.ts,
 * store-zones.ts, store-tokens.ts (and signals), store-relay.ts (and the audit trail).
 */

export * from "./store-managers.ts";
export * from "./store-relay.ts";
export type { Db, TrustzoneTables } from "./store-tables.ts";
export * from "./store-tokens.ts";
export * from "./store-zones.ts";
