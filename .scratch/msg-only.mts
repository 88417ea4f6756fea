import { benchMessaging } from "../bench/messaging.ts";
for (let i = 0; i < Number(process.env.R ?? 1); i++)
for (const r of await benchMessaging()) console.log(r.name.padEnd(70), r.value.toFixed(0), r.unit, r.ratio?.toFixed(2) ?? "");
