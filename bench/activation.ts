/**
 * HTTPS activations per second end to end (grant + CPace start + confirm: three HTTPS requests,
 * two CPace halves, audit, sealed storage), against the ceiling of bare HTTPS round trips to the
 * same server with the same client and concurrency, divided by three.
 */
import { activate, login, type Session } from "../src/activation/handset.ts";
import { Handset } from "../src/handset/handset.ts";
import { MemoryKeystore } from "../src/handset/keystore.ts";
import { createNodeHttpClient } from "../src/handset/node-transport.ts";
import { startBenchServer } from "./server.ts";
import { forDuration } from "./timing.ts";
import type { BenchResult } from "./types.ts";

const CONCURRENCY = 8;
const MEASURE_MS = 3000;

export async function benchActivation(): Promise<BenchResult[]> {
  const bench = await startBenchServer("activation", { HANDSAFE_EXCHANGE_RATE_LIMIT: "0" });
  const { server } = bench;
  const clients: Array<{ close(): void }> = [];
  try {
    const admin = createNodeHttpClient({ baseUrl: server.url, pin: server.pin });
    clients.push(admin);
    const auth = { headers: { authorization: `Bearer ${server.adminToken}` } };
    await admin.post("/v1/admin/users", { email: "bench@example.org", password: "bench password 1" }, auth);
    await admin.post("/v1/admin/services", { uid: "bench", name: "Bench" }, auth);
    const handsets: Array<{ handset: Handset; session: Session }> = [];
    for (let i = 0; i < CONCURRENCY; i++) {
      const handset = await Handset.open(
        new MemoryKeystore(),
        (a) => {
          const c = createNodeHttpClient({ baseUrl: a.url, pin: a.pin! });
          clients.push(c);
          return c;
        },
        { url: server.url, pin: server.pin },
      );
      handsets.push({
        handset,
        session: await login(handset, { email: "bench@example.org", password: "bench password 1" }),
      });
    }
    // Warm up both paths.
    for (const { handset, session } of handsets) await activate(handset, session, "bench");
    const bare = await forDuration(
      MEASURE_MS,
      handsets.map(
        ({ handset }) =>
          () =>
            handset.http.get("/healthz"),
      ),
    );
    const activations = await forDuration(
      MEASURE_MS,
      handsets.map(
        ({ handset, session }) =>
          () =>
            activate(handset, session, "bench"),
      ),
    );
    const ceiling = { name: "bare HTTPS round trips ÷ 3", value: bare / 3 };
    return [
      { name: "HTTPS round trips (GET /healthz)", value: bare, unit: "req/s" },
      {
        name: `HTTPS activations end to end (SQLite, ${CONCURRENCY} handsets)`,
        value: activations,
        unit: "activations/s",
        ceiling,
        ratio: activations / ceiling.value,
      },
    ];
  } finally {
    for (const c of clients) c.close();
    await bench.close();
  }
}
