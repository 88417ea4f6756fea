import { readFileSync } from "node:fs";
const parent = JSON.parse(readFileSync(process.argv[2])); const child = JSON.parse(readFileSync(process.argv[3]));
const t0 = child.startTime, t1 = child.endTime;
const byId = new Map(parent.nodes.map(n=>[n.id,n])); const m = new Map(); let t = parent.startTime, tot=0;
for (let i=0;i<parent.samples.length;i++){ t += parent.timeDeltas[i]; if (t < t0 || t > t1) continue; const c=byId.get(parent.samples[i]).callFrame; const k=`${c.functionName||"(anon)"} ${c.url.split("/").slice(-1)[0]}`; m.set(k,(m.get(k)??0)+parent.timeDeltas[i]); tot+=parent.timeDeltas[i]; }
console.log("window", ((t1-t0)/1e6).toFixed(2), "s; parent samples", (tot/1e6).toFixed(2));
for (const [k,v] of [...m].sort((a,b)=>b[1]-a[1]).slice(0,22)) console.log("  ", (v/1e6).toFixed(2).padStart(6), k);
