/** core/crypto: thin, typed wrappers over standard primitives. See each module for its standard. */
export {
  AEAD_KEY_LENGTH,
  AEAD_NONCE_LENGTH,
  AEAD_TAG_LENGTH,
  aesGcmOpen,
  aesGcmSeal,
  chachaOpen,
  chachaSeal,
} from "./aead.ts";
export type { CryptoBackend } from "./backend/types.ts";
export {
  CPACE_ISK_LENGTH,
  CPACE_MESSAGE_LENGTH,
  CPaceInitiatorState,
  type CPaceInput,
  cpaceFinish,
  cpaceInitiate,
  cpaceRespond,
} from "./cpace.ts";
export { constantTimeEqual } from "./ct.ts";
export { generateSigningKey, type SigningKeyPair, sign, signingPublicKey, verify } from "./ed25519.ts";
export { hmacSha256, sha256, sha512 } from "./hash.ts";
export { HKDF_SHA256_MAX_LENGTH, hkdfExpand, hkdfExtract, hkdfSha256 } from "./hkdf.ts";
export { randomBytes, randomToken } from "./random.ts";
export { generateX25519, type X25519KeyPair, x25519, x25519PublicKey } from "./x25519.ts";
