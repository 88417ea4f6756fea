/**
 * The device wrapper: how the handset SDK reaches its static key without ever holding it. The key
 * stays inside the wrapper (a private field, or the simulated SIM's card); callers pass a function
 * that runs with it and gets back only what that function returns. There is no getter.
 *
 * Sources (docs/protocols/management.md §Static keys):
 * - fromKeyFile: the manufacturer's key file produced on import (JSON, one per device);
 * - simulatedSim: a SIM that holds the key on the card and runs computations there;
 * - embedded: the client's own key compiled or configured into it.
 */
import { HandsafeError } from "../core/errors.ts";
import { type KeySource, parseKeyFile, STATIC_KEY_BYTES } from "./protocol.ts";

export interface DeviceWrapper {
  readonly deviceId: string;
  readonly hardwareId: string;
  readonly model: string;
  readonly keySource: KeySource;
  /**
   * Runs `fn` with (a copy of) the static key and wipes the copy when `fn` returns. `fn` must use
   * the key synchronously and must not keep it.
   */
  withStaticKey<T>(fn: (key: Uint8Array) => T): T;
}

interface Identity {
  deviceId: string;
  hardwareId: string;
  model: string;
}

class KeyHoldingWrapper implements DeviceWrapper {
  readonly #key: Uint8Array;

  constructor(
    readonly deviceId: string,
    readonly hardwareId: string,
    readonly model: string,
    readonly keySource: KeySource,
    key: Uint8Array,
  ) {
    if (!(key instanceof Uint8Array) || key.length !== STATIC_KEY_BYTES)
      throw new HandsafeError("device.invalid_static_key", `a static key is ${STATIC_KEY_BYTES} bytes`);
    this.#key = Uint8Array.from(key);
  }

  withStaticKey<T>(fn: (key: Uint8Array) => T): T {
    const copy = Uint8Array.from(this.#key);
    try {
      const result = fn(copy);
      if (result instanceof Promise)
        throw new HandsafeError("device.async_key_use", "withStaticKey takes a synchronous function");
      return result;
    } finally {
      copy.fill(0);
    }
  }

  toJSON(): Record<string, string> {
    return { deviceId: this.deviceId, model: this.model, keySource: this.keySource, staticKey: "[redacted]" };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `DeviceWrapper(${this.deviceId}, ${this.keySource}, key redacted)`;
  }
}

/** A manufacturer key file (its JSON text or parsed object). */
export function fromKeyFile(json: string | unknown): DeviceWrapper {
  const file = parseKeyFile(json);
  try {
    return new KeyHoldingWrapper(file.deviceId, file.hardwareId, file.model, "file", file.staticKeyBytes);
  } finally {
    file.staticKeyBytes.fill(0);
  }
}

/** The client's own embedded key (e.g. from its build or secure configuration). */
export function embedded(identity: Identity & { staticKey: Uint8Array }): DeviceWrapper {
  return new KeyHoldingWrapper(
    identity.deviceId,
    identity.hardwareId,
    identity.model,
    "embedded",
    identity.staticKey,
  );
}

/**
 * A simulated SIM: the key is written to the card once (personalisation) and never read back;
 * the card runs the caller's computation itself, as a SIM applet would. `iccid` names the card.
 */
export class SimulatedSimCard {
  readonly #key: Uint8Array;
  #operations = 0;

  constructor(
    readonly iccid: string,
    staticKey: Uint8Array,
  ) {
    if (!(staticKey instanceof Uint8Array) || staticKey.length !== STATIC_KEY_BYTES)
      throw new HandsafeError("device.invalid_static_key", `a static key is ${STATIC_KEY_BYTES} bytes`);
    this.#key = Uint8Array.from(staticKey);
  }

  /** How many computations the card ran (a real SIM meters them too). */
  get operations(): number {
    return this.#operations;
  }

  run<T>(fn: (key: Uint8Array) => T): T {
    this.#operations++;
    const copy = Uint8Array.from(this.#key);
    try {
      return fn(copy);
    } finally {
      copy.fill(0);
    }
  }

  toJSON(): Record<string, string> {
    return { iccid: this.iccid, key: "[on card]" };
  }
}

export function simulatedSim(identity: Identity & { card: SimulatedSimCard }): DeviceWrapper {
  const { card } = identity;
  return Object.freeze({
    deviceId: identity.deviceId,
    hardwareId: identity.hardwareId,
    model: identity.model,
    keySource: "sim" as const,
    withStaticKey<T>(fn: (key: Uint8Array) => T): T {
      return card.run(fn);
    },
    toJSON: () => ({ deviceId: identity.deviceId, keySource: "sim", iccid: card.iccid }),
  });
}
