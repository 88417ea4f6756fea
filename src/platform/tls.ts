/**
 * The server's TLS identity. For the embedded default a self-signed ECDSA P-256 certificate is made on
 * first start under `<dataDir>/tls/` and reused afterwards; handsets do not trust it through a CA but pin
 * its key: the pin is the base64url SHA-256 of the certificate's DER SubjectPublicKeyInfo (the same value
 * HPKP, RFC 7469 §2.4, hashes). The key — not the certificate — is pinned, so a renewed certificate over
 * the same key keeps every handset working.
 *
 * P-256 rather than Ed25519 because browsers do not accept Ed25519 server certificates.
 */

import { createHash, createPrivateKey, X509Certificate as NodeX509Certificate, webcrypto } from "node:crypto";
import { mkdir, open, readFile, rename, stat } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import type * as X509 from "@peculiar/x509";
import { toBase64url } from "../core/codec/base64url.ts";
import { HandsafeError } from "../core/errors.ts";

export interface ServerCertificate {
  certPem: string;
  keyPem: string;
  /** base64url (unpadded) SHA-256 of the certificate's DER SubjectPublicKeyInfo. */
  spkiSha256: string;
}

/** 825 days: the longest validity Apple platforms accept for a TLS server certificate. */
const VALIDITY_DAYS = 825;
const DAY_MS = 24 * 60 * 60 * 1000;
/** Start the validity a little in the past so a client whose clock lags does not reject it. */
const BACKDATE_MS = 60 * 60 * 1000;

/**
 * Returns the certificate under `<dataDir>/tls/`, making a self-signed one on first start. `hostnames`
 * are added to the SAN (beside `localhost`, 127.0.0.1 and ::1) only when the certificate is created: a
 * later start reuses the files as they are, so the pin never changes behind the handsets' back.
 */
export async function ensureServerCertificate(
  dataDir: string,
  hostnames: string[] = [],
): Promise<ServerCertificate & { created: boolean }> {
  const dir = join(dataDir, "tls");
  const certPath = join(dir, "cert.pem");
  const keyPath = join(dir, "key.pem");
  if (await exists(certPath)) {
    if (!(await exists(keyPath)))
      throw new HandsafeError("config.tls_invalid", `${certPath} exists but its key ${keyPath} is missing`, {
        status: 500,
      });
    return { ...(await loadCertificate(certPath, keyPath)), created: false };
  }
  // No certificate yet (a key alone is the leftover of an interrupted first start: it was never served).
  const made = await createSelfSignedCertificate(hostnames);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Key first, certificate last: the certificate's presence marks a complete pair.
  await writeFileAtomic(keyPath, made.keyPem);
  await writeFileAtomic(certPath, made.certPem);
  return { ...made, created: true };
}

/** Makes a self-signed ECDSA P-256 / SHA-256 server certificate in memory. */
export async function createSelfSignedCertificate(hostnames: string[] = []): Promise<ServerCertificate> {
  const x509 = await loadX509();
  const crypto = webcrypto as unknown as Crypto;
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"])) as CryptoKeyPair;
  const notBefore = new Date(Date.now() - BACKDATE_MS);
  const notAfter = new Date(notBefore.getTime() + VALIDITY_DAYS * DAY_MS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: "CN=handsafe server (self-signed)",
      notBefore,
      notAfter,
      signingAlgorithm: algorithm,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(subjectAltNames(hostnames)),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  const certPem = cert.toString("pem");
  return {
    certPem,
    keyPem: x509.PemConverter.encode(pkcs8, "PRIVATE KEY"),
    spkiSha256: spkiPinOfCertificate(certPem),
  };
}

/**
 * Loads an operator-provided certificate (PEM; a chain is allowed, the leaf first) and its private key
 * (PEM), and checks that they belong together. Any failure is `config.tls_invalid`.
 */
export async function loadCertificate(certPath: string, keyPath: string): Promise<ServerCertificate> {
  const invalid = (message: string, cause?: unknown) =>
    new HandsafeError("config.tls_invalid", message, { status: 500, cause });
  let certPem: string;
  let keyPem: string;
  try {
    certPem = await readFile(certPath, "utf8");
    keyPem = await readFile(keyPath, "utf8");
  } catch (e) {
    throw invalid(`cannot read the TLS certificate or key: ${(e as Error).message}`, e);
  }
  let cert: NodeX509Certificate;
  try {
    cert = new NodeX509Certificate(certPem);
  } catch (e) {
    throw invalid(`${certPath} is not a PEM X.509 certificate`, e);
  }
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch (e) {
    throw invalid(`${keyPath} is not a PEM private key`, e);
  }
  if (!matches) throw invalid(`${keyPath} is not the private key of ${certPath}`);
  return { certPem, keyPem, spkiSha256: spkiPin(cert) };
}

/** The pin of a PEM certificate (the first one, if the text holds a chain). */
export function spkiPinOfCertificate(certPem: string): string {
  let cert: NodeX509Certificate;
  try {
    cert = new NodeX509Certificate(certPem);
  } catch (e) {
    throw new HandsafeError("config.tls_invalid", "not a PEM X.509 certificate", { status: 500, cause: e });
  }
  return spkiPin(cert);
}

/** How a pin is shown to people (CLI output, console, logs) — the OpenSSH style of fingerprint. */
export function formatFingerprint(pin: string): string {
  return `SHA256:${pin}`;
}

function spkiPin(cert: NodeX509Certificate): string {
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return toBase64url(createHash("sha256").update(spki).digest());
}

function subjectAltNames(hostnames: string[]): X509.JsonGeneralNames {
  const names: X509.JsonGeneralNames = [];
  const seen = new Set<string>();
  const add = (type: "dns" | "ip", value: string) => {
    const key = `${type}:${value.toLowerCase()}`;
    if (seen.has(key)) return;
    seen.add(key);
    names.push({ type, value });
  };
  add("dns", "localhost");
  for (const h of hostnames) {
    const name = h.trim();
    if (name === "") continue;
    add(isIP(name) ? "ip" : "dns", name);
  }
  add("ip", "127.0.0.1");
  add("ip", "::1");
  return names;
}

/**
 * @peculiar/x509 registers its algorithms through tsyringe, which needs the Reflect metadata API:
 * the `reflect-metadata` polyfill is loaded first, hence the dynamic import.
 */
let x509Module: Promise<typeof X509> | undefined;
function loadX509(): Promise<typeof X509> {
  x509Module ??= (async () => {
    await import("reflect-metadata");
    return await import("@peculiar/x509");
  })();
  return x509Module;
}

/** RFC 5280 §4.1.2.2: positive, at most 20 octets; 128 random bits with the top bit cleared. */
function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return Buffer.from(bytes).toString("hex");
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}

async function writeFileAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  const handle = await open(tmp, "w", 0o600);
  try {
    await handle.writeFile(text, "utf8");
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
}
