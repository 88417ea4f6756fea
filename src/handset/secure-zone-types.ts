/** The secure zone's public shapes (docs/protocols/trustzone.md §6); re-exported by secure-zone.ts. */

import type { HpkeSealed } from "../core/crypto/hpke.ts";
import type { RelayCommand } from "../trustzone/protocol.ts";
import type { ContainerState } from "./secure-zone-store.ts";

export interface ZoneBundle {
  zoneId: string;
  zmk: Uint8Array;
  userInfo: string;
  epoch: number;
  /** The pinned trust-zone token-signing keys: kid → Ed25519 public key. */
  trustZonePublicKeys: Record<string, Uint8Array>;
}

export interface ContainerView {
  index: number;
  state: ContainerState;
  occupant: string | null;
  jti: string | null;
  notAfter: number | null;
  maxAttempts: number;
  attemptsLeft: number;
  packages: number;
  bytes: number;
}

export interface SubKeyResult {
  jti: string;
  managerId: string;
  /** SK, HPKE-sealed to the manager (open with protocol.openSubKey). */
  sealedSubKey: HpkeSealed;
  /** What the zone reports to the server: container indices and KC_i, never CK_i. */
  containers: { index: number; keyCheck: Uint8Array }[];
  notAfter: number;
  maxAttempts: number;
}

export interface ContainerHandle {
  readonly index: number;
  put(name: string, sealedPackage: Uint8Array): Promise<void>;
  get(name: string): Promise<Uint8Array | undefined>;
  delete(name: string): Promise<boolean>;
  list(): Promise<string[]>;
}

export interface RelayResult {
  op: RelayCommand["op"];
  package?: Uint8Array | undefined;
  deleted?: boolean;
  names?: string[];
}
