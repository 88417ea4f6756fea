import { createHash, createHmac, createCipheriv, randomBytes } from "node:crypto";
const buf = randomBytes(64*1024); const N = 16384; // 1 GiB
function t(name, f){ const s=performance.now(); f(); console.log(name, ((performance.now()-s)/1000).toFixed(2),"s/GiB"); }
t("sha256", ()=>{ const h=createHash("sha256"); for(let i=0;i<N;i++) h.update(buf); h.digest(); });
t("hmac", ()=>{ const h=createHmac("sha256", randomBytes(32)); for(let i=0;i<N;i++) h.update(buf); h.digest(); });
t("blake2b512", ()=>{ const h=createHash("blake2b512"); for(let i=0;i<N;i++) h.update(buf); h.digest(); });
t("sha512", ()=>{ const h=createHash("sha512"); for(let i=0;i<N;i++) h.update(buf); h.digest(); });
t("chacha-poly per chunk", ()=>{ const k=randomBytes(32); for(let i=0;i<N;i++){ const n=Buffer.alloc(12); n.writeUInt32BE(i,7); const c=createCipheriv("chacha20-poly1305",k,n,{authTagLength:16}); c.update(buf); c.final(); c.getAuthTag(); } });
