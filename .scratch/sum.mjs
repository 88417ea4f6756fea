import { readFileSync } from "node:fs";
for (const f of process.argv.slice(2)) { const p = JSON.parse(readFileSync(f)); const byId = new Map(p.nodes.map(n=>[n.id,n]));
 const m = new Map(); let tot=0; for (let i=0;i<p.samples.length;i++){ const c=byId.get(p.samples[i]).callFrame; const k=`${c.functionName||"(anon)"} ${c.url.split("/").slice(-1)[0]}`; m.set(k,(m.get(k)??0)+p.timeDeltas[i]); tot+=p.timeDeltas[i]; }
 console.log("==", f.split("/").pop(), (tot/1e6).toFixed(2), "s");
 for (const [k,v] of [...m].sort((a,b)=>b[1]-a[1]).slice(0,14)) console.log("  ", (v/1e6).toFixed(2).padStart(6), k); }
