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
// hpke.ts also exports `hpkeInternals` (fixed ephemeral keys, for the RFC 9180 vectors): not re-exported here.
export {
  deriveHpkeKeyPair,
  generateHpkeKeyPair,
  HPKE_AEAD_ID,
  HPKE_ENC_LENGTH,
  HPKE_EXPORT_MAX_LENGTH,
  HPKE_KDF_ID,
  HPKE_KEM_ID,
  HPKE_PRIVATE_KEY_LENGTH,
  HPKE_PSK_MIN_LENGTH,
  HPKE_PUBLIC_KEY_LENGTH,
  HPKE_TAG_LENGTH,
  type HpkeKeyPair,
  type HpkeMessageOptions,
  type HpkeRecipientContext,
  type HpkeRecipientKey,
  type HpkeSealed,
  type HpkeSenderContext,
  hpkeOpen,
  hpkeRecipientKey,
  hpkeSeal,
  isValidHpkePublicKey,
  setupBaseR,
  setupBaseS,
  setupPskR,
  setupPskS,
} from "./hpke.ts";
export {
  CODE_MAC_KEY_LENGTH,
  codeMac,
  codesEqual,
  dynamicTruncate,
  generateNumericCode,
  type HotpOptions,
  hotp,
  hotpDigest,
  OTP_MIN_KEY_LENGTH,
  type OtpHash,
  TOTP_DEFAULT_PERIOD,
  type TotpOptions,
  totp,
  totpCounter,
  verifyTotp,
} from "./otp.ts";
export { randomBytes, randomToken } from "./random.ts";
export { generateX25519, type X25519KeyPair, x25519, x25519PublicKey } from "./x25519.ts";
