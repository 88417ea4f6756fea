import Sqlite from "better-sqlite3";
const proto = Object.getPrototypeOf(new Sqlite(":memory:").prepare("select 1"));
const stats = new Map<string, { n: number; ns: bigint }>();
for (const m of ["run", "all", "get", "iterate"]) {
  const orig = proto[m];
  proto[m] = function (this: any, ...args: any[]) {
    const t = process.hrtime.bigint(); try { return orig.apply(this, args); } finally {
      const k = `${m} ${this.source.slice(0, 110)}`; const s = stats.get(k) ?? { n: 0, ns: 0n }; s.n++; s.ns += process.hrtime.bigint() - t; stats.set(k, s);
    }
  };
}
const { startBenchServer } = await import("../bench/server.ts");
const { server, close } = await startBenchServer("svc", { HANDSAFE_SMS_PER_NUMBER_PER_HOUR: "0", HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT: "0" });
const svc = server.messaging.service;
const created = await svc.createSender({ name: "Bench" }, "admin");
const sender = await svc.authenticateSender(created.apiKey, "1.2.3.4");
let seq = 0;
const nextNumber = () => `+49151${String(10_000_000 + (seq++ % 89_999_999)).slice(-8)}`;
const text = { type: "text", text: "Your test results are ready: please call the clinic. ".repeat(3) };
for (let i = 0; i < 500; i++) await svc.sendMessage(sender, { to: nextNumber(), body: text });
stats.clear();
if (process.env.CKPT) (server.platform.db as any); 
const N = 3000; let n = 0; const t0 = performance.now();
await Promise.all(Array.from({ length: 8 }, async () => { while (n < N) { n++; await svc.sendMessage(sender, { to: nextNumber(), body: text }); } }));
const wall = (performance.now() - t0) * 1000 / N;
let tot = 0n;
for (const [k, s] of [...stats].sort((a, b) => Number(b[1].ns - a[1].ns))) { tot += s.ns; console.log((Number(s.ns) / 1000 / N).toFixed(1).padStart(7), "µs/msg", String(s.n).padStart(6), k); }
console.log("sql total", (Number(tot) / 1000 / N).toFixed(1), "µs/msg; wall", wall.toFixed(0), "µs/msg");
await close();
