import { adminClient } from "../src/cli/connect.ts";
import { bearerToken } from "../src/platform/auth/guard.ts";
import { CEILING_PATH, startCeilingServer } from "../bench/ceiling-route.ts";
import { writeFileSync, mkdirSync } from "node:fs";
const { server, close } = await startCeilingServer("msg", { HANDSAFE_SMS_PER_NUMBER_PER_HOUR: "0", HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT: "0" },
  (running, request) => running.messaging.service.authenticateSender(bearerToken(request), request.ip));
const admin = adminClient(server, server.adminToken!);
const { body: sender } = await admin.post<{ apiKey: string }>("/v1/admin/senders", { name: "Bench" });
const senders = Array.from({ length: 8 }, () => adminClient(server, sender.apiKey));
let seq = 0; const nextNumber = () => `+49151${String(10_000_000 + (seq++ % 89_999_999)).slice(-8)}`;
const text = { type: "text", text: "Your test results are ready: please call the clinic. ".repeat(3) };
const path = process.env.P === "ceiling" ? CEILING_PATH : "/v1/messages";
async function loop(ms: number) { const end = performance.now() + ms; let n = 0;
  await Promise.all(senders.map(async (c) => { while (performance.now() < end) { await c.post(path, { to: nextNumber(), body: text }); n++; } })); return n; }
await loop(1000);
const { Session } = await import("node:inspector/promises");
const s = new Session(); s.connect(); await s.post("Profiler.enable"); await s.post("Profiler.setSamplingInterval", { interval: 200 }); await s.post("Profiler.start");
const n = await loop(3000);
const { profile } = await s.post("Profiler.stop");
mkdirSync("/tmp/prof3" + (process.env.P ?? ""), { recursive: true }); writeFileSync(`/tmp/prof3${process.env.P ?? ""}/a.cpuprofile`, JSON.stringify(profile));
console.log((server.messaging.service as any).acceptances?.stats());
console.log(path, n / 3, "/s", (3e6 / n).toFixed(0), "µs each");
for (const c of [admin, ...senders]) c.close(); await close();
