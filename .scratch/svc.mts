import { startBenchServer } from "../bench/server.ts";
import { sql } from "kysely";
const { server, close } = await startBenchServer("svc", { HANDSAFE_SMS_PER_NUMBER_PER_HOUR: "0", HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT: "0" });
const svc = server.messaging.service;
const created = await svc.createSender({ name: "Bench" }, "admin");
const sender = await svc.authenticateSender(created.apiKey, "1.2.3.4");
let seq = 0;
const nextNumber = () => `+49151${String(10_000_000 + (seq++ % 89_999_999)).slice(-8)}`;
const text = { type: "text", text: "Your test results are ready: please call the clinic. ".repeat(3) };
await sql`create table if not exists bench_ceiling (id text primary key, caller_id text not null, body text not null, created_at bigint not null)`.execute(server.platform?.db ?? (server as any).db);
import { randomToken } from "../src/core/crypto/random.ts";
const db = server.platform.db as any;
async function rate(name: string, one: () => Promise<unknown>, ms = 1500, conc = 8) {
  const end = performance.now() + ms; let n = 0;
  await Promise.all(Array.from({ length: conc }, async () => { while (performance.now() < end) { await one(); n++; } }));
  const us = (ms * 1000) / n; console.log(name.padEnd(30), (n / (ms / 1000)).toFixed(0), "/s", us.toFixed(0), "µs each");
}
for (let r = 0; r < 3; r++) {
  await rate("ceiling insert", () => sql`insert into bench_ceiling values (${randomToken(12)}, ${sender.id}, ${JSON.stringify({ to: nextNumber(), body: text })}, ${Date.now()})`.execute(db));
  await rate("sendMessage unregistered", () => svc.sendMessage(sender, { to: nextNumber(), body: text }));
  await rate("authenticateSender", () => svc.authenticateSender(created.apiKey, "1.2.3.4"));
}
await close();
