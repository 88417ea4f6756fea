import { backend as defaultBackend } from "#crypto-backend";
import { concatBytes, utf8 } from "../codec/bytes.ts";
import { HandsafeError, isHandsafeError } from "../errors.ts";
import { type CryptoBackend, isAllZero } from "./backend/types.ts";

/**
 * CPace, suite CPACE-X25519-SHA512, as specified by draft-irtf-cfrg-cpace-21 (CFRG, 23 April 2026;
 * https://github.com/cfrg/draft-irtf-cfrg-cpace, directory draft-irtf-cfrg-cpace-21). Section
 * numbers below are that revision's. The draft's functions are exported one by one (camelCase
 * names, the draft's name in each comment) so test/vectors can check every step of Appendix B.1;
 * `cpaceInitiate` / `cpaceRespond` / `cpaceFinish` are the sans-I/O protocol on top (§7, in the
 * initiator-responder setting with transcript_ir).
 *
 * Every function that needs a primitive takes an optional backend last (default: the platform's
 * `#crypto-backend`) so tests and benchmarks can run the same code on node:crypto and on noble.
 */

/** §8.2 G_X25519.DSI. */
export const CPACE_DSI = utf8("CPace255");
/** §7.2: the ISK hash is domain-separated by G.DSI || "_ISK". */
const CPACE_DSI_ISK = utf8("CPace255_ISK");
/** §6.2 H.s_in_bytes for SHA-512. */
const SHA512_BLOCK_BYTES = 128;
/** §8.2 G_X25519.field_size_bytes / field_size_bits. */
const FIELD_SIZE_BYTES = 32;
const FIELD_SIZE_BITS = 255;
/** §6.2 H.b_in_bytes for SHA-512: the ISK length. */
export const CPACE_ISK_LENGTH = 64;
export const CPACE_MESSAGE_LENGTH = FIELD_SIZE_BYTES;

// ---- Appendix A.1: string utilities ---------------------------------------------------------

function leb128Length(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** A.1.1 prepend_len(data): the LEB128 encoding of len(data), then data. */
export function prependLen(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(leb128Length(data.length) + data.length);
  let n = data.length;
  let i = 0;
  while (n >= 128) {
    out[i++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[i++] = n;
  out.set(data, i);
  return out;
}

/** A.1.3 lv_cat(a0, a1, …) = prepend_len(a0) || prepend_len(a1) || … */
export function lvCat(...parts: Uint8Array[]): Uint8Array {
  return concatBytes(...parts.map(prependLen));
}

/**
 * §8.1 / A.2 generator_string(DSI, PRS, CI, sid, s_in_bytes) =
 * lv_cat(DSI, PRS, zero_bytes(len_zpad), CI, sid), where the zero padding makes DSI and PRS fill
 * the hash's first input block so that its length does not depend on the password's length.
 */
export function generatorString(
  dsi: Uint8Array,
  prs: Uint8Array,
  ci: Uint8Array,
  sid: Uint8Array,
  sInBytes: number,
): Uint8Array {
  const prsField = leb128Length(prs.length) + prs.length;
  const dsiField = leb128Length(dsi.length) + dsi.length;
  const lenZpad = Math.max(0, sInBytes - 1 - prsField - dsiField);
  return lvCat(dsi, prs, new Uint8Array(lenZpad), ci, sid);
}

// ---- Appendix A.3: transcripts --------------------------------------------------------------

/** A.3.1 lexiographically_larger(bytes1, bytes2). */
export function lexicographicallyLarger(a: Uint8Array, b: Uint8Array): boolean {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i]! > b[i]!) return true;
    if (a[i]! < b[i]!) return false;
  }
  return a.length > b.length;
}

/** A.3.2 o_cat(bytes1, bytes2): "oc" then the larger string first. */
export function oCat(a: Uint8Array, b: Uint8Array): Uint8Array {
  return lexicographicallyLarger(a, b) ? concatBytes(utf8("oc"), a, b) : concatBytes(utf8("oc"), b, a);
}

/** A.3.4 transcript_ir(Ya, ADa, Yb, ADb): the initiator-responder transcript. */
export function transcriptIr(ya: Uint8Array, adA: Uint8Array, yb: Uint8Array, adB: Uint8Array): Uint8Array {
  return concatBytes(lvCat(ya, adA), lvCat(yb, adB));
}

/** A.3.6 transcript_oc(Ya, ADa, Yb, ADb): the symmetric (parallel) transcript. */
export function transcriptOc(ya: Uint8Array, adA: Uint8Array, yb: Uint8Array, adB: Uint8Array): Uint8Array {
  return oCat(lvCat(ya, adA), lvCat(yb, adB));
}

// ---- A.4 / A.5: field elements and the Elligator 2 map --------------------------------------

const P = (1n << 255n) - 19n;
const LOW_255 = (1n << 255n) - 1n;
/** Curve25519's Montgomery coefficient A (RFC 7748 §4.1); B = 1. */
const CURVE_A = 486662n;
/** RFC 9380 §6.7.1 Z for curve25519 (A.5 find_z_ell2 gives 2 as well). */
const ELL2_Z = 2n;

/**
 * a mod p for 0 ≤ a < 2^515, by folding 2^255 ≡ 19 twice. The result is < 2^255 + 2^12: loosely
 * reduced, fine as the input of the next product; `normalize` makes it canonical.
 */
function reduce(a: bigint): bigint {
  a = (a & LOW_255) + 19n * (a >> 255n);
  return (a & LOW_255) + 19n * (a >> 255n);
}

function normalize(a: bigint): bigint {
  a = reduce(a);
  return a >= P ? a - P : a;
}

function mul(a: bigint, b: bigint): bigint {
  return reduce(a * b);
}

function squareTimes(a: bigint, times: number): bigint {
  for (let i = 0; i < times; i++) a = reduce(a * a);
  return a;
}

/**
 * z^((p-3)/2) = z^(2^254 - 11) by a fixed addition chain: the usual z^(2^250 - 1) chain of
 * curve25519 inversions, then 4 squarings and a multiplication by z^5. 254 squarings and 12
 * multiplications whatever z is.
 */
export function powPMinus3Over2(z: bigint): bigint {
  const z2 = reduce(z * z);
  const z9 = mul(squareTimes(z2, 2), z);
  const z11 = mul(z9, z2);
  const z5_0 = mul(reduce(z11 * z11), z9);
  const z10_0 = mul(squareTimes(z5_0, 5), z5_0);
  const z20_0 = mul(squareTimes(z10_0, 10), z10_0);
  const z40_0 = mul(squareTimes(z20_0, 20), z20_0);
  const z50_0 = mul(squareTimes(z40_0, 10), z10_0);
  const z100_0 = mul(squareTimes(z50_0, 50), z50_0);
  const z200_0 = mul(squareTimes(z100_0, 100), z100_0);
  const z250_0 = mul(squareTimes(z200_0, 50), z50_0);
  const z5 = mul(reduce(z2 * z2), z);
  return normalize(mul(squareTimes(z250_0, 4), z5));
}

/** A.4 decodeUCoordinate(u, 255): little-endian, bit 255 ignored (RFC 7748 §5). */
export function decodeUCoordinate(bytes: Uint8Array): bigint {
  let value = 0n;
  for (let i = FIELD_SIZE_BYTES - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i] ?? 0);
  return value & ((1n << BigInt(FIELD_SIZE_BITS)) - 1n);
}

/** A.4 encodeUCoordinate(u, 255): 32 bytes, little-endian. */
export function encodeUCoordinate(u: bigint): Uint8Array {
  const out = new Uint8Array(FIELD_SIZE_BYTES);
  let v = normalize(u);
  for (let i = 0; i < FIELD_SIZE_BYTES; i++) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/**
 * RFC 9380 §6.7.1 map_to_curve_elligator2 for curve25519 (J = A, K = 1, Z = 2), returning only
 * the u-coordinate — CPace discards v (§8.2). Instead of the RFC's two exponentiations (an
 * inversion for x1 = -A / (1 + Z·r²) and is_square(gx1)) this takes one: with d = 1 + Z·r²,
 * x1 = -A/d and gx1 = num/d³ where num = -A·(A² - A²·d + d²); gx1 is a square iff m = num·d is.
 * t = m^((p-3)/2) gives χ = t·m = m^((p-1)/2) = ±1 and 1/m = t·χ, hence 1/d = num/m. (m ≠ 0:
 * d ≠ 0 by step 3, and gx1 ≠ 0 because A² - 4 is not a square mod p.) The operation sequence is
 * fixed; JavaScript BigInt gives no stronger constant-time guarantee than that.
 */
export function elligator2Curve25519U(r: bigint): bigint {
  const rr = normalize(r);
  let tv1 = normalize(ELL2_Z * normalize(rr * rr)); // step 1: Z·r²
  // steps 2-3: the exceptional case Z·r² = -1 (never met for Z = 2: -1/2 is not a square mod p)
  if (tv1 === P - 1n) tv1 = 0n;
  const d = 1n + tv1; // 1 ≤ d ≤ p - 1
  const n = P - CURVE_A; // -A
  const num = mul(n, reduce(n * n + CURVE_A * mul(n, d) + d * d)); // n·(n² + A·n·d + d²)
  const m = mul(num, d);
  const t = powPMinus3Over2(m);
  const chi = normalize(t * m); // Legendre symbol of gx1: 1 (square) or p - 1
  const isSquare = chi === 1n;
  const invM = isSquare ? t : P - t;
  const x1 = normalize(n * mul(num, invM)); // step 4: -A / d
  const x2 = normalize(2n * P - x1 - CURVE_A); // step 6: -x1 - A
  return isSquare ? x1 : x2; // steps 7-8: x = x1 if gx1 is square, else x2
}

// ---- §8.2 G_X25519 and §7 protocol steps ----------------------------------------------------

/** §8.2 G.calculate_generator(H, PRS, CI, sid): the password-dependent base point g. */
export function calculateGenerator(
  prs: Uint8Array,
  ci: Uint8Array,
  sid: Uint8Array,
  via: CryptoBackend = defaultBackend,
): Uint8Array {
  const genStr = generatorString(CPACE_DSI, prs, ci, sid, SHA512_BLOCK_BYTES);
  const genStrHash = via.sha512(genStr).subarray(0, FIELD_SIZE_BYTES); // H.hash(gen_str, 32)
  return encodeUCoordinate(elligator2Curve25519U(decodeUCoordinate(genStrHash)));
}

/** §8.2 G.sample_scalar() = sample_random_bytes(32) (X25519 clamps it). */
export function sampleScalar(via: CryptoBackend = defaultBackend): Uint8Array {
  return via.randomBytes(FIELD_SIZE_BYTES);
}

/** §8.2 G.I: the neutral element, 32 zero bytes. */
export const CPACE_NEUTRAL = new Uint8Array(FIELD_SIZE_BYTES);

/**
 * §8.2 G.scalar_mult_vfy(y, g) = X25519(y, g), with every low-order input mapped to G.I (the
 * backends refuse to produce the zero point; this is where the draft's G.I is given back).
 */
export function scalarMultVfy(y: Uint8Array, g: Uint8Array, via: CryptoBackend = defaultBackend): Uint8Array {
  return multiplyVfy(via.x25519Multiplier(y), g);
}

type Multiplier = (u: Uint8Array) => Uint8Array;

function multiplyVfy(times: Multiplier, g: Uint8Array): Uint8Array {
  try {
    return times(g);
  } catch (e) {
    if (isHandsafeError(e, "crypto.invalid_point")) return CPACE_NEUTRAL.slice();
    throw e;
  }
}

/** §7.2 ISK = H.hash(lv_cat(G.DSI || "_ISK", sid, K) || transcript). */
export function deriveIsk(
  sid: Uint8Array,
  k: Uint8Array,
  transcript: Uint8Array,
  via: CryptoBackend = defaultBackend,
): Uint8Array {
  return via.sha512(concatBytes(lvCat(CPACE_DSI_ISK, sid, k), transcript));
}

// ---- §7 the protocol, initiator-responder, sans I/O -----------------------------------------

/** One party's inputs (§4.1). `ad` is this party's associated data (ADa or ADb), sent in clear. */
export interface CPaceInput {
  prs: Uint8Array;
  ci: Uint8Array;
  sid: Uint8Array;
  ad: Uint8Array;
}

interface InitiatorSecrets {
  sid: Uint8Array;
  /** X25519 with ya, imported once (the raw ya is erased after cpaceInitiate). */
  ya: Multiplier;
  yaPoint: Uint8Array;
  adA: Uint8Array;
  via: CryptoBackend;
}

/**
 * The initiator's state between its message and the responder's. Opaque: the scalar lives in a
 * module-private WeakMap, so the object cannot leak it through logging or JSON; it is erased
 * once `cpaceFinish` has been called (successfully or not), and a second call is refused.
 */
export class CPaceInitiatorState {
  toJSON(): { cpace: "initiator"; finished: boolean } {
    return { cpace: "initiator", finished: !initiatorSecrets.has(this) };
  }
}

const initiatorSecrets = new WeakMap<CPaceInitiatorState, InitiatorSecrets>();

function scalarOrSample(scalar: Uint8Array | undefined, via: CryptoBackend): Uint8Array {
  if (scalar === undefined) return sampleScalar(via);
  if (scalar.length !== FIELD_SIZE_BYTES)
    throw new HandsafeError("crypto.invalid_key", `CPace scalar must be ${FIELD_SIZE_BYTES} bytes`);
  return scalar.slice();
}

function checkMessage(y: Uint8Array, who: string): void {
  if (!(y instanceof Uint8Array) || y.length !== CPACE_MESSAGE_LENGTH)
    throw new HandsafeError("cpace.invalid_message", `${who} must be ${CPACE_MESSAGE_LENGTH} bytes`);
}

function invalidPoint(): HandsafeError {
  return new HandsafeError("cpace.invalid_point", "CPace share is a low-order point: aborting (§7.2)");
}

/** §7.2 Y = G.scalar_mult(y, g); G.I here would mean a broken generator, so it aborts too. */
function publicShare(y: Multiplier, g: Uint8Array): Uint8Array {
  const share = multiplyVfy(y, g);
  if (isAllZero(share)) throw invalidPoint();
  return share;
}

/** K = G.scalar_mult_vfy(y, Y); the party MUST abort if K = G.I (§7.2). */
function sharedPoint(y: Multiplier, peer: Uint8Array): Uint8Array {
  const k = multiplyVfy(y, peer);
  if (isAllZero(k)) throw invalidPoint();
  return k;
}

/** A's first step: computes g, samples ya and returns Ya to send (with ADa) to B. */
export function cpaceInitiate(
  input: CPaceInput,
  scalar?: Uint8Array,
  via: CryptoBackend = defaultBackend,
): { state: CPaceInitiatorState; message: Uint8Array } {
  const g = calculateGenerator(input.prs, input.ci, input.sid, via);
  const ya = scalarOrSample(scalar, via);
  const times = via.x25519Multiplier(ya);
  ya.fill(0);
  const yaPoint = publicShare(times, g);
  const state = new CPaceInitiatorState();
  initiatorSecrets.set(state, { sid: input.sid.slice(), ya: times, yaPoint, adA: input.ad.slice(), via });
  return { state, message: yaPoint };
}

/** B's only step: from A's Ya and ADa, returns B's ISK and the Yb to send (with ADb) to A. */
export function cpaceRespond(
  input: CPaceInput,
  ya: Uint8Array,
  adA: Uint8Array,
  scalar?: Uint8Array,
  via: CryptoBackend = defaultBackend,
): { isk: Uint8Array; message: Uint8Array } {
  checkMessage(ya, "Ya");
  const g = calculateGenerator(input.prs, input.ci, input.sid, via);
  const yb = scalarOrSample(scalar, via);
  const times = via.x25519Multiplier(yb);
  yb.fill(0);
  const ybPoint = publicShare(times, g);
  const k = sharedPoint(times, ya);
  const isk = deriveIsk(input.sid, k, transcriptIr(ya, adA, ybPoint, input.ad), via);
  k.fill(0);
  return { isk, message: ybPoint };
}

/** A's last step: from B's Yb and ADb, returns A's ISK. The state cannot be used again. */
export function cpaceFinish(state: CPaceInitiatorState, yb: Uint8Array, adB: Uint8Array): Uint8Array {
  const secrets = initiatorSecrets.get(state);
  if (secrets === undefined)
    throw new HandsafeError("cpace.state_used", "this CPace initiator state was already used", {
      status: 409,
    });
  initiatorSecrets.delete(state); // from here on, the multiplier holding ya is unreachable
  checkMessage(yb, "Yb");
  const k = sharedPoint(secrets.ya, yb);
  const isk = deriveIsk(secrets.sid, k, transcriptIr(secrets.yaPoint, secrets.adA, yb, adB), secrets.via);
  k.fill(0);
  return isk;
}
