import { readFileSync, readdirSync } from "node:fs";
const dir = process.argv[2]; const f = readdirSync(dir).find(x=>x.endsWith(".cpuprofile"));
const p = JSON.parse(readFileSync(`${dir}/${f}`));
const byId = new Map(p.nodes.map(n=>[n.id,n]));
const self = new Map(); const dt = p.timeDeltas; let total=0;
for (let i=0;i<p.samples.length;i++){ const n=byId.get(p.samples[i]); const k=(process.argv[3]==="file")? (n.callFrame.url.replace(/.*\/(src|node_modules)\//,"$1/")||n.callFrame.functionName) : `${n.callFrame.functionName} ${n.callFrame.url.replace(/.*\/(src|node_modules)\//,"$1/")}:${n.callFrame.lineNumber}`; self.set(k,(self.get(k)??0)+dt[i]); total+=dt[i]; }
const rows=[...self].sort((a,b)=>b[1]-a[1]).slice(0,Number(process.argv[4]??40));
for (const [k,v] of rows) console.log((v/total*100).toFixed(1).padStart(5)+"%", k);
