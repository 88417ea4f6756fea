import { readFileSync, readdirSync } from "node:fs";
const dir = process.argv[2]; const f = readdirSync(dir).find(x=>x.endsWith(".cpuprofile"));
const p = JSON.parse(readFileSync(`${dir}/${f}`));
const byId = new Map(p.nodes.map(n=>[n.id,n])); const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const incl = new Map(); let total = 0;
for (let i=0;i<p.samples.length;i++){ total += p.timeDeltas[i]; const seen = new Set(); let id = p.samples[i];
  while (id !== undefined) { const n = byId.get(id); const k = `${n.callFrame.functionName||"(anon)"} ${n.callFrame.url.replace(/.*\/(src|node_modules)\//,"$1/")}:${n.callFrame.lineNumber}`; if (!seen.has(k)) { seen.add(k); incl.set(k,(incl.get(k)??0)+p.timeDeltas[i]); } id = parent.get(id); } }
const filt = process.argv[3] ?? "src/";
for (const [k,v] of [...incl].filter(([k])=>k.includes(filt)).sort((a,b)=>b[1]-a[1]).slice(0, Number(process.argv[4] ?? 50))) console.log((v/total*100).toFixed(1).padStart(5)+"%", k);
