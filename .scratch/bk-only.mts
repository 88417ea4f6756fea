import { benchBackup } from "../bench/backup.ts";
for (const r of await benchBackup()) console.log(r.name, r.value.toFixed(1), r.unit, r.ceiling?.name, r.ceiling?.value.toFixed(1), r.ratio?.toFixed(2));
