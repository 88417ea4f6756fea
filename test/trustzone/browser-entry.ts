/** What the browser bundle test builds: the handset side of the trust zone as a browser would load it. */
export { backend as cryptoBackend } from "#crypto-backend";
export { MemoryKeystore } from "../../src/handset/keystore.ts";
export { SecureZone } from "../../src/handset/secure-zone.ts";
export {
  deriveContainerKey,
  openPackage,
  openSubKey,
  relayProof,
  sealPackage,
  ZONE_REQUEST_SIGNATURE,
} from "../../src/trustzone/protocol.ts";
