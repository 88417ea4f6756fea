/**
 * Accounts and bearer tokens. Tokens are 32 random bytes shown once; only their SHA-256 is kept,
 * so a database dump holds no usable token.
 */
import { createHash } from "node:crypto";
import type { Kysely } from "kysely";
import { randomToken } from "../../core/crypto/random.ts";
import { HandsafeError } from "../../core/errors.ts";
import type { MigrationRegistry } from "../db/migrate.ts";
import { dummyPasswordHash, hashPassword, verifyPassword } from "./passwords.ts";

export interface AuthTables {
  users: { id: string; email: string; password_hash: string; role: string; created_at: number };
  api_tokens: {
    token_hash: string;
    kind: string;
    user_id: string | null;
    handset_id: string | null;
    label: string | null;
    created_at: number;
    expires_at: number | null;
  };
}

export const authMigrations: MigrationRegistry = {
  "0002_auth": {
    async up(db) {
      await db.schema
        .createTable("users")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("email", "text", (c) => c.notNull().unique())
        .addColumn("password_hash", "text", (c) => c.notNull())
        .addColumn("role", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("api_tokens")
        .addColumn("token_hash", "text", (c) => c.primaryKey())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("user_id", "text")
        .addColumn("handset_id", "text")
        .addColumn("label", "text")
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("expires_at", "bigint")
        .execute();
    },
  },
};

export type Role = "user" | "admin";
export interface User {
  id: string;
  email: string;
  role: Role;
  createdAt: number;
}

const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,255}$/;

export function normaliseEmail(email: string): string {
  const e = email.trim().toLowerCase();
  if (!EMAIL.test(e)) throw new HandsafeError("auth.invalid_email", "not an email address");
  return e;
}

function toUser(row: AuthTables["users"]): User {
  return { id: row.id, email: row.email, role: row.role as Role, createdAt: Number(row.created_at) };
}

export async function createUser(
  db: Kysely<AuthTables>,
  input: { email: string; password: string; role?: Role },
  now = Date.now(),
): Promise<User> {
  const email = normaliseEmail(input.email);
  const row = {
    id: `usr_${randomToken(12)}`,
    email,
    password_hash: await hashPassword(input.password),
    role: input.role ?? "user",
    created_at: now,
  };
  const existing = await db.selectFrom("users").select("id").where("email", "=", email).executeTakeFirst();
  if (existing)
    throw new HandsafeError("auth.email_taken", "an account with this email exists", { status: 409 });
  try {
    await db.insertInto("users").values(row).execute();
  } catch (err) {
    const again = await db.selectFrom("users").select("id").where("email", "=", email).executeTakeFirst();
    if (again)
      throw new HandsafeError("auth.email_taken", "an account with this email exists", { status: 409 });
    throw err;
  }
  return toUser(row);
}

export async function findUserByEmail(db: Kysely<AuthTables>, email: string): Promise<User | undefined> {
  let e: string;
  try {
    e = normaliseEmail(email);
  } catch {
    return undefined;
  }
  const row = await db.selectFrom("users").selectAll().where("email", "=", e).executeTakeFirst();
  return row ? toUser(row) : undefined;
}

/**
 * Unknown account and wrong password answer alike, in the same time: the answer must not tell an
 * attacker which emails have accounts.
 */
export async function authenticateUser(
  db: Kysely<AuthTables>,
  email: string,
  password: string,
): Promise<User> {
  let row: AuthTables["users"] | undefined;
  try {
    row = await db
      .selectFrom("users")
      .selectAll()
      .where("email", "=", normaliseEmail(email))
      .executeTakeFirst();
  } catch {
    row = undefined;
  }
  const ok = await verifyPassword(password, row?.password_hash ?? (await dummyPasswordHash()));
  if (!row || !ok)
    throw new HandsafeError("auth.invalid_credentials", "wrong email or password", { status: 401 });
  return toUser(row);
}

export function hashToken(token: string): string {
  return createHash("sha256").update(`handsafe/v1/token\0${token}`).digest("hex");
}

export type TokenKind = "admin" | "session";

export interface Principal {
  kind: TokenKind;
  userId: string | null;
  handsetId: string | null;
}

export async function issueToken(
  db: Kysely<AuthTables>,
  input: { kind: TokenKind; userId?: string; handsetId?: string; label?: string; ttlMs?: number },
  now = Date.now(),
): Promise<{ token: string; expiresAt: number | null }> {
  const token = `hs${input.kind === "admin" ? "a" : "s"}_${randomToken(32)}`;
  const expiresAt = input.ttlMs === undefined ? null : now + input.ttlMs;
  await db
    .insertInto("api_tokens")
    .values({
      token_hash: hashToken(token),
      kind: input.kind,
      user_id: input.userId ?? null,
      handset_id: input.handsetId ?? null,
      label: input.label ?? null,
      created_at: now,
      expires_at: expiresAt,
    })
    .execute();
  return { token, expiresAt };
}

/** Looks a bearer token up by its hash (the lookup itself is the comparison: no secret compared). */
export async function resolveToken(
  db: Kysely<AuthTables>,
  token: string,
  now = Date.now(),
): Promise<Principal | undefined> {
  if (token.length > 200) return undefined;
  const row = await db
    .selectFrom("api_tokens")
    .selectAll()
    .where("token_hash", "=", hashToken(token))
    .executeTakeFirst();
  if (!row) return undefined;
  if (row.expires_at !== null && Number(row.expires_at) <= now) return undefined;
  return { kind: row.kind as TokenKind, userId: row.user_id, handsetId: row.handset_id };
}

export async function revokeToken(db: Kysely<AuthTables>, token: string): Promise<void> {
  await db.deleteFrom("api_tokens").where("token_hash", "=", hashToken(token)).execute();
}

export async function countAdminTokens(db: Kysely<AuthTables>): Promise<number> {
  const row = await db
    .selectFrom("api_tokens")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("kind", "=", "admin")
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}
