/** TUF 1.0 for update metadata: a repository model and a client verifier, both without I/O. */
export { canonicalBytes } from "./canonical.ts";
export {
  DEFAULT_TUF_LIMITS,
  type FileRequest,
  TufClient,
  type TufClientLimits,
  type TufFetch,
  type TufTargetInfo,
  type TufTrustedState,
} from "./client.ts";
export { TUF_ERROR_STATUS, type TufErrorCode } from "./errors.ts";
export {
  ed25519TufKey,
  formatExpires,
  type Hashes,
  type JsonValue,
  keyidOf,
  type Metadata,
  type MetaFile,
  parseMetadata,
  parseUpdateCustom,
  ROLE_NAMES,
  type RoleKeys,
  type RoleName,
  type RootSigned,
  type SnapshotSigned,
  serializeMetadata,
  type TargetFile,
  type TargetsSigned,
  type TimestampSigned,
  TUF_SPEC_VERSION,
  type TufKey,
  type TufSignature,
  type UpdateTargetCustom,
} from "./metadata.ts";
export {
  DEFAULT_EXPIRIES,
  type Expiries,
  type OnlineRole,
  type PendingRoot,
  type RoleChange,
  type RoleSetup,
  TufRepository,
  type TufRepositoryRecord,
} from "./repository.ts";
export { addSignature, type Signer, seedSigner, signOffline } from "./signing.ts";
export {
  createTargetVerifier,
  type TargetVerifier,
  targetFileName,
  verifyTarget,
} from "./target-verifier.ts";
