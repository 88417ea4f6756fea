import { createCipheriv, randomBytes, createSecretKey } from "node:crypto";
const key = randomBytes(32), pt = randomBytes(400), aad = randomBytes(60);
const ko = createSecretKey(key);
function t(name, f, n=50000){ for(let i=0;i<2000;i++) f(); const s=performance.now(); for(let i=0;i<n;i++) f(); console.log(name, ((performance.now()-s)*1000/n).toFixed(2), "µs"); }
t("gcm raw key", ()=>{ const c=createCipheriv("aes-256-gcm", key, randomBytes(12), {authTagLength:16}); c.setAAD(aad); c.update(pt); c.final(); c.getAuthTag(); });
t("gcm keyobject", ()=>{ const c=createCipheriv("aes-256-gcm", ko, randomBytes(12), {authTagLength:16}); c.setAAD(aad); c.update(pt); c.final(); c.getAuthTag(); });
t("randomBytes12", ()=>randomBytes(12));
const { gcm } = await import("@noble/ciphers/aes").catch(()=>({}));
if (gcm) t("noble gcm", ()=>gcm(key, randomBytes(12), aad).encrypt(pt));
