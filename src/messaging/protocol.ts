/**
 * Secure messaging protocol core — no I/O. Spec: docs/protocols/messaging.md; every label, id form,
 * state and text is listed there.
 *
 *   sender ──POST /v1/messages {to, body}──► server: plaintext sealed at rest (envelope)
 *   server ──HPKE SealBase(handset X25519 key, info, aad = id ‖ 0 ‖ handset)──► delivery per handset
 *   handset ──signed GET inbox──► OpenBase, check id and number ──► ack / read / reply
 *
 * In three files: labels.ts (labels, the signature profile, ids, limits, states), message.ts (bodies,
 * the plaintext and its HPKE binding), codes.ts (the registration state machine, the texts, the webhook
 * payloads). The server applies them with compare-and-set updates; the SDK with the keystore.
 */
export * from "./codes.ts";
export * from "./labels.ts";
export * from "./message.ts";
