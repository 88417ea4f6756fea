import type { Compilable, CompiledQuery, DialectAdapter, Kysely, QueryResult } from "kysely";
import { executeCompiled } from "./direct.ts";

/**
 * A hot query compiled once per engine and then run with new parameters. Kysely builds and
 * compiles every query anew (a few tens of microseconds each); a fixed-shape query on a hot path
 * need not. `build` is called once per engine with placeholders standing for the arguments; the
 * compiled text is kept, and each run fills the placeholders' positions with that run's arguments
 * (an argument used twice fills both; a constant `build` wrote stays). On SQLite the statement
 * runs straight on the connection when no other caller can be using it (direct.ts); otherwise the
 * text reaches the driver as any query's would, through the same statement cache (database.ts).
 *
 * Only for queries whose shape does not depend on the argument values (no `undefined` columns, no
 * `in` lists of varying length, no branching in `build`), and only on a Kysely without plugins
 * (ours have none): the compiled query is shared by every Kysely of the same engine adapter,
 * transactions included.
 */
export interface PreparedQuery<DB, A extends readonly unknown[], R> {
  execute(db: Kysely<DB>, ...args: A): Promise<QueryResult<R>>;
}

class Placeholder {
  constructor(readonly index: number) {}
}

interface Template {
  readonly compiled: CompiledQuery;
  /** For each compiled parameter, the argument it takes, or -1 for a constant of `build`'s. */
  readonly slots: readonly number[];
}

export function prepareQuery<DB, A extends readonly unknown[], R>(
  arity: A["length"],
  build: (db: Kysely<DB>, ...args: A) => Compilable<R>,
): PreparedQuery<DB, A, R> {
  const templates = new WeakMap<DialectAdapter, Template>();
  const template = (db: Kysely<DB>): Template => {
    const adapter = db.getExecutor().adapter;
    let t = templates.get(adapter);
    if (t === undefined) {
      const placeholders = Array.from({ length: arity }, (_, i) => new Placeholder(i)) as unknown as A;
      const compiled = build(db, ...placeholders).compile();
      const slots = compiled.parameters.map((p) => (p instanceof Placeholder ? p.index : -1));
      if (new Set(slots.filter((i) => i >= 0)).size !== arity)
        throw new Error(`prepareQuery: "${compiled.sql}" does not use each of its ${arity} arguments`);
      t = { compiled, slots };
      templates.set(adapter, t);
    }
    return t;
  };
  return {
    execute(db, ...args) {
      const { compiled, slots } = template(db);
      const parameters = slots.map((i, k) => (i < 0 ? compiled.parameters[k] : args[i]));
      return executeCompiled(db, { ...compiled, parameters } as CompiledQuery<R>);
    },
  };
}
