/**
 * The handset SDK as a browser (or a browser plug-in) loads it: no node:* module anywhere in
 * its import graph. Crypto comes from the audited @noble libraries through the "#crypto-backend"
 * import condition; the keystore lives in memory; TLS is the browser's own.
 */

export { backend as cryptoBackend } from "#crypto-backend";
export {
  activate,
  handleActivationResponse,
  listActivated,
  login,
  pinService,
  pullCommands,
  readNotifications,
  revoke,
} from "../activation/handset.ts";
export { ACTIVATION_CONTENT_TYPE } from "../activation/protocol.ts";
export { HandsafeError } from "../core/errors.ts";
export { Handset } from "../handset/handset.ts";
export { createFetchTransport, createHttpClient } from "../handset/http-client.ts";
export { MemoryKeystore } from "../handset/keystore.ts";
