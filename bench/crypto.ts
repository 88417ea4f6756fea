import { utf8 } from "../src/core/codec/bytes.ts";
import { backend as nodeBackend } from "../src/core/crypto/backend/node.ts";
import type { CryptoBackend } from "../src/core/crypto/backend/types.ts";
import { backend as webBackend } from "../src/core/crypto/backend/web.ts";
import { calculateGenerator, cpaceFinish, cpaceInitiate, cpaceRespond } from "../src/core/crypto/cpace.ts";
import type { BenchResult } from "./types.ts";
import { opsPerSecond } from "./timing.ts";

/**
 * Crypto throughput. The CPace figure is compared with what X25519 alone allows: an exchange
 * (both sides) costs 4 scalar multiplications + 2 Elligator maps + 4 SHA-512, so
 * "X25519 ops/s ÷ 4" is its ceiling; the goal is ≥ 60 % of it on the node backend.
 */

const MEASURE_MS = 1000;

function cpaceExchange(b: CryptoBackend): () => void {
  const common = { prs: utf8("correct horse battery staple"), ci: utf8("bench"), sid: b.randomBytes(16) };
  const adA = utf8("A");
  const adB = utf8("B");
  return () => {
    const a = cpaceInitiate({ ...common, ad: adA }, undefined, b);
    const r = cpaceRespond({ ...common, ad: adB }, a.message, adA, undefined, b);
    cpaceFinish(a.state, r.message, adB);
  };
}

function measureBackend(b: CryptoBackend, ms: number): BenchResult[] {
  const scalar = b.randomBytes(32);
  const peer = b.x25519PublicKey(b.randomBytes(32));
  const x25519 = opsPerSecond(() => b.x25519(scalar, peer), ms);
  const times = b.x25519Multiplier(scalar);
  const x25519Prepared = opsPerSecond(() => times(peer), ms);
  const map = opsPerSecond(() => calculateGenerator(utf8("pw"), utf8("ci"), scalar.subarray(0, 16), b), ms);
  const exchanges = opsPerSecond(cpaceExchange(b), ms);
  const bound = x25519 / 4;
  const seed = b.randomBytes(32);
  const pub = b.ed25519PublicKey(seed);
  const message = b.randomBytes(64);
  const signature = b.ed25519Sign(seed, message);
  return [
    { name: `x25519 scalar multiplication, key import included (${b.name})`, value: x25519, unit: "ops/s" },
    {
      name: `x25519 with a prepared scalar, for information (${b.name})`,
      value: x25519Prepared,
      unit: "ops/s",
    },
    { name: `cpace calculate_generator: SHA-512 + Elligator 2 (${b.name})`, value: map, unit: "ops/s" },
    {
      name: `cpace exchange: initiate + respond + finish (${b.name})`,
      value: exchanges,
      unit: "exchanges/s",
      ceiling: { name: `x25519 ops/s ÷ 4 (${b.name})`, value: bound },
      ratio: exchanges / bound,
      aim: { issue: 2, min: 0.6 },
    },
    {
      name: `ed25519 sign (${b.name})`,
      value: opsPerSecond(() => b.ed25519Sign(seed, message), ms),
      unit: "ops/s",
    },
    {
      name: `ed25519 verify (${b.name})`,
      value: opsPerSecond(() => b.ed25519Verify(pub, message, signature), ms),
      unit: "ops/s",
    },
  ];
}

export async function benchCrypto(): Promise<BenchResult[]> {
  const node = measureBackend(nodeBackend, MEASURE_MS);
  // noble is 10-40× slower: the same loop length still gives stable figures, for information.
  const web = measureBackend(webBackend, MEASURE_MS);
  const ratioTo = (name: string, value: number, ceiling: BenchResult): BenchResult => ({
    name,
    value,
    unit: ceiling.unit,
    ceiling: { name: ceiling.name, value: ceiling.value },
    ratio: value / ceiling.value,
  });
  return [
    ...node,
    ...web,
    ratioTo("ed25519 sign, noble vs node", web[4]!.value, node[4]!),
    ratioTo("ed25519 verify, noble vs node", web[5]!.value, node[5]!),
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await benchCrypto()) {
    const ceiling = r.ceiling
      ? `  (ceiling ${r.ceiling.name}: ${r.ceiling.value.toFixed(0)}, ratio ${r.ratio!.toFixed(2)})`
      : "";
    console.log(`${r.name}: ${r.value.toFixed(0)} ${r.unit}${ceiling}`);
  }
}
