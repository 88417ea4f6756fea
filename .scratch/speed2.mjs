import { createHash, createCipheriv, randomBytes } from "node:crypto";
const buf = randomBytes(64*1024); const N = 16384;
function t(name, f){ f(); const s=performance.now(); f(); console.log(name, ((performance.now()-s)/1000).toFixed(2),"s/GiB"); }
const k=randomBytes(32);
t("chacha bulk", ()=>{ const c=createCipheriv("chacha20-poly1305",k,Buffer.alloc(12),{authTagLength:16}); for(let i=0;i<N;i++) c.update(buf); c.final(); });
t("chacha per chunk", ()=>{ for(let i=0;i<N;i++){ const n=Buffer.alloc(12); n.writeUInt32BE(i,7); const c=createCipheriv("chacha20-poly1305",k,n,{authTagLength:16}); c.update(buf); c.final(); c.getAuthTag(); } });
t("empty cipher create x16384", ()=>{ for(let i=0;i<N;i++){ const n=Buffer.alloc(12); n.writeUInt32BE(i,7); const c=createCipheriv("chacha20-poly1305",k,n,{authTagLength:16}); c.final(); c.getAuthTag(); } });
t("sha256", ()=>{ const h=createHash("sha256"); for(let i=0;i<N;i++) h.update(buf); h.digest(); });
