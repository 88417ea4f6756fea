/** A recipient stanza (age v1 §Recipient stanza): its arguments and its decoded body. */
export interface Stanza {
  readonly args: readonly string[];
  readonly body: Uint8Array;
}

/** Wraps the 16-byte file key for one recipient; returns the stanza(s) to write. */
export interface AgeRecipient {
  wrap(fileKey: Uint8Array): Stanza[];
}

/**
 * Looks for its own stanzas among all of the header's. Returns the file key, `undefined` when no
 * stanza is addressed to it (age v1: unrecognised stanzas MUST be ignored), and throws a
 * HandsafeError for a stanza of its type that is malformed.
 */
export interface AgeIdentity {
  unwrap(stanzas: readonly Stanza[]): Uint8Array | undefined;
}

export const FILE_KEY_LENGTH = 16;
