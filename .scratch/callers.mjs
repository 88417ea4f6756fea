import { readFileSync, readdirSync } from "node:fs";
const dir = process.argv[2]; const name = process.argv[3];
const f = readdirSync(dir).find(x=>x.endsWith(".cpuprofile")); const p = JSON.parse(readFileSync(`${dir}/${f}`));
const byId = new Map(p.nodes.map(n=>[n.id,n])); const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map(); for (let i=0;i<p.samples.length;i++) self.set(p.samples[i], (self.get(p.samples[i])??0)+p.timeDeltas[i]);
const agg = new Map();
for (const n of p.nodes) if (n.callFrame.functionName === name) { let chain=[]; let id=parent.get(n.id); for (let d=0; d<Number(process.argv[4]??3) && id!==undefined; d++){ const q=byId.get(id); chain.push(`${q.callFrame.functionName}@${q.callFrame.url.split("/").pop()}:${q.callFrame.lineNumber}`); id=parent.get(id);} const k=chain.join(" < "); agg.set(k,(agg.get(k)??0)+(self.get(n.id)??0)); }
for (const [k,v] of [...agg].sort((a,b)=>b[1]-a[1]).slice(0,15)) console.log((v/1000).toFixed(0).padStart(6),"ms", k);
