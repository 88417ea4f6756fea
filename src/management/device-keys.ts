/**
 * A device's keys at rest: the static key and its dynamic keys, sealed with the keyring under their
 * row's identity (docs/protocols/management.md §Roles and keys), and the session keys derived from
 * the pair. Plaintext keys live only inside the callbacks here and are wiped afterwards.
 */
import type { Keyring } from "../platform/keyring.ts";
import { DynamicKey, deriveSessionKey, type SessionPurpose } from "./protocol.ts";
import type * as store from "./store.ts";

const staticAad = (id: string) => `management/static-key/${id}`;
const dynamicAad = (id: string) => `management/dynamic-key/${id}`;

export class DeviceKeys {
  constructor(private readonly keyring: Keyring) {}

  sealStaticKey(deviceId: string, key: Uint8Array): Uint8Array {
    return this.keyring.sealAtRest(key, staticAad(deviceId));
  }

  sealDynamicKey(keyId: string, key: DynamicKey): Uint8Array {
    return this.keyring.sealAtRest(key.reveal(), dynamicAad(keyId));
  }

  /** The stored dynamic key, opened; the caller wipes it. */
  openDynamicKey(key: store.DynamicKeyRow): DynamicKey {
    return new DynamicKey(this.keyring.openAtRest(key.sealedKey, dynamicAad(key.id)));
  }

  /** Runs `fn` with the device's static key, wiping the plaintext afterwards. */
  withStaticKey<T>(device: store.DeviceRow, fn: (key: Uint8Array) => T): T {
    const key = this.keyring.openAtRest(device.sealedStaticKey, staticAad(device.id));
    try {
      return fn(key);
    } finally {
      key.fill(0);
    }
  }

  /** The session key of `purpose` under the device's static key and this dynamic key; the caller wipes it. */
  sessionKeyOf(device: store.DeviceRow, key: store.DynamicKeyRow, purpose: SessionPurpose): Uint8Array {
    const dynamicKey = this.openDynamicKey(key);
    try {
      return this.withStaticKey(device, (staticKey) => {
        const session = deriveSessionKey(staticKey, dynamicKey, device.id, purpose);
        return Uint8Array.from(session.reveal());
      });
    } finally {
      dynamicKey.wipe();
    }
  }
}
