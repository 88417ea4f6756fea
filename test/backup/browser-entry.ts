/** What the backup browser bundle test builds: the backup SDK as a browser would load it. */
export { backend as cryptoBackend } from "#crypto-backend";
export { encodeEnvelope, parseEnvelope } from "../../src/backup/envelope.ts";
export { BackupClient, planBackup } from "../../src/backup/handset.ts";
export { collectBytes, openItem, sealItem } from "../../src/backup/item-crypto.ts";
export { IdentityModule } from "../../src/handset/identity-module.ts";
export { MemoryKeystore } from "../../src/handset/keystore.ts";
