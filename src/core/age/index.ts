/** The age v1 file format (c2sp.org/age): X25519 and scrypt (passphrase) recipients. See docs/protocols/age.md. */
export { decrypt, decryptBytes, encrypt, encryptBytes } from "./age.ts";
export { armor, dearmor } from "./armor.ts";
export { AGE_ERRORS, type AgeErrorCode } from "./errors.ts";
export { encodeHeader, type Header, parseHeader, verifyHeaderMac } from "./format.ts";
export {
  encodeIdentity,
  encodeRecipient,
  generateIdentity,
  identityToRecipient,
  parseIdentity,
  parseRecipient,
} from "./keys.ts";
export type { ByteSource } from "./reader.ts";
export {
  SCRYPT_DEFAULT_LOG_N,
  SCRYPT_DEFAULT_MAX_LOG_N,
  ScryptIdentity,
  ScryptRecipient,
} from "./scrypt-recipient.ts";
export type { AgeIdentity, AgeRecipient, Stanza } from "./stanza.ts";
export { CHUNK_SIZE } from "./stream.ts";
export { X25519Identity, X25519Recipient } from "./x25519-recipient.ts";
