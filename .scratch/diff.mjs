import { readFileSync, readdirSync } from "node:fs";
function load(dir, n) { const f = readdirSync(dir).find(x=>x.endsWith(".cpuprofile")); const p = JSON.parse(readFileSync(`${dir}/${f}`));
  const byId = new Map(p.nodes.map(n=>[n.id,n])); const m = new Map();
  for (let i=0;i<p.samples.length;i++){ const c=byId.get(p.samples[i]).callFrame; const k=c.url.replace(/.*\/(src|node_modules|bench)\//,"$1/").replace(/^(node_modules\/[^/]+).*/,"$1")||c.functionName; m.set(k,(m.get(k)??0)+p.timeDeltas[i]/n); }
  return m; }
const a = load(process.argv[2], Number(process.argv[3])), b = load(process.argv[4], Number(process.argv[5]));
const keys = new Set([...a.keys(), ...b.keys()]); let ta=0, tb=0;
const rows = [...keys].map(k => [k, a.get(k)??0, b.get(k)??0]); for (const r of rows) { ta+=r[1]; tb+=r[2]; }
for (const [k,x,y] of rows.sort((p,q)=>(q[1]-q[2])-(p[1]-p[2])).slice(0,35)) console.log(k.padEnd(55), x.toFixed(0).padStart(6), y.toFixed(0).padStart(6), (x-y).toFixed(0).padStart(6));
console.log("total".padEnd(55), ta.toFixed(0).padStart(6), tb.toFixed(0).padStart(6));
