/**
 * The handset SDK's base: an identity (an Ed25519 key pair kept in the keystore; the handset's
 * id is derived from its public key), a keystore, and an HTTPS client to its server. Each
 * capability's handset.ts builds on this; none of them touches raw keys outside the keystore.
 */
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { generateSigningKey, sign, signingPublicKey } from "../core/crypto/ed25519.ts";
import { HandsafeError } from "../core/errors.ts";
import { handsetIdOf } from "../core/handset-id.ts";
import type { HttpClient } from "./http-client.ts";
import type { Keystore } from "./keystore.ts";

const IDENTITY_ENTRY = "handset/identity";
const SERVER_ENTRY = "handset/server";

export interface ServerAddress {
  url: string;
  /** base64url SHA-256 of the server certificate's SubjectPublicKeyInfo. */
  pin?: string;
}

export class Handset {
  readonly id: string;
  readonly identityKey: Uint8Array;

  private constructor(
    readonly keystore: Keystore,
    readonly http: HttpClient,
    readonly server: ServerAddress,
    identityKey: Uint8Array,
  ) {
    this.identityKey = identityKey;
    this.id = handsetIdOf(identityKey);
  }

  /**
   * Opens the handset whose state is in `keystore`, creating its identity on first use.
   * `connect` makes the HTTPS client for the server address (pinned in Node).
   */
  static async open(
    keystore: Keystore,
    connect: (server: ServerAddress) => HttpClient,
    server?: ServerAddress,
  ): Promise<Handset> {
    let seed = await keystore.get(IDENTITY_ENTRY);
    if (!seed) {
      seed = generateSigningKey().seed;
      await keystore.put(IDENTITY_ENTRY, seed);
    }
    const stored = await keystore.get(SERVER_ENTRY);
    let address = stored ? (JSON.parse(fromUtf8(stored)) as ServerAddress) : undefined;
    if (server) {
      address = server;
      await keystore.put(SERVER_ENTRY, utf8(JSON.stringify(server)));
    }
    if (!address)
      throw new HandsafeError(
        "handset.no_server",
        "this handset has no server yet: give its URL (and pin) once",
      );
    const publicKey = signingPublicKey(seed);
    seed.fill(0);
    return new Handset(keystore, connect(address), address, publicKey);
  }

  /** Signs with the identity key; the key is read from the keystore for this call only. */
  async signWithIdentity(message: Uint8Array): Promise<Uint8Array> {
    const seed = await this.keystore.get(IDENTITY_ENTRY);
    if (!seed) throw new HandsafeError("handset.no_identity", "this handset's identity key is missing");
    try {
      return sign(seed, message);
    } finally {
      seed.fill(0);
    }
  }

  close(): void {
    this.http.close();
  }
}
