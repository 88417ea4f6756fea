import { createHash, X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import {
  createSelfSignedCertificate,
  ensureServerCertificate,
  formatFingerprint,
  loadCertificate,
  spkiPinOfCertificate,
} from "../../src/platform/tls.ts";

let dataDir: string;
beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "handsafe-tls-"));
});
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

describe("the self-signed server certificate", () => {
  it("is made once, written 0600, and reused with the same pin on later starts", async () => {
    const first = await ensureServerCertificate(dataDir, ["handsafe.example", "10.1.2.3"]);
    expect(first.created).toBe(true);
    for (const f of ["cert.pem", "key.pem"]) {
      expect((await stat(join(dataDir, "tls", f))).mode & 0o777).toBe(0o600);
    }
    expect(await readFile(join(dataDir, "tls", "cert.pem"), "utf8")).toBe(first.certPem);
    const second = await ensureServerCertificate(dataDir, ["other.example"]);
    expect(second.created).toBe(false);
    expect(second.spkiSha256).toBe(first.spkiSha256);
    expect(second.certPem).toBe(first.certPem);
  });

  it("is ECDSA P-256, 825 days, with the SANs browsers check", async () => {
    const made = await ensureServerCertificate(dataDir, ["handsafe.example", "10.1.2.3"]);
    const cert = new X509Certificate(made.certPem);
    expect(cert.publicKey.asymmetricKeyType).toBe("ec");
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    expect(days).toBe(825);
    expect(cert.subjectAltName).toContain("DNS:localhost");
    expect(cert.subjectAltName).toContain("DNS:handsafe.example");
    expect(cert.subjectAltName).toContain("IP Address:10.1.2.3");
    expect(cert.subjectAltName).toContain("IP Address:127.0.0.1");
    expect(cert.ca).toBe(false);
    expect(cert.checkHost("localhost")).toBe("localhost");
    expect(cert.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(cert.checkIP("::1")).toBe("::1");
    expect(cert.checkIP("10.1.2.4")).toBeUndefined();
  });

  it("gets a fresh random serial and key each time", async () => {
    const a = new X509Certificate((await createSelfSignedCertificate()).certPem);
    const b = new X509Certificate((await createSelfSignedCertificate()).certPem);
    expect(a.serialNumber).not.toBe(b.serialNumber);
    expect(a.publicKey.export({ type: "spki", format: "der" })).not.toEqual(
      b.publicKey.export({ type: "spki", format: "der" }),
    );
  });

  it("pins the SHA-256 of the DER SubjectPublicKeyInfo", async () => {
    const made = await ensureServerCertificate(dataDir);
    const spki = new X509Certificate(made.certPem).publicKey.export({ type: "spki", format: "der" });
    const expected = toBase64url(createHash("sha256").update(spki).digest());
    expect(made.spkiSha256).toBe(expected);
    expect(spkiPinOfCertificate(made.certPem)).toBe(expected);
    expect(made.spkiSha256).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(formatFingerprint(made.spkiSha256)).toBe(`SHA256:${expected}`);
  });

  it("serves a real TLS client over node:https", async () => {
    const made = await ensureServerCertificate(dataDir);
    const server = createServer({ cert: made.certPem, key: made.keyPem }, (_req, res) => res.end("ok"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const peer = await new Promise<{ pin: string; authorized: boolean }>((resolve, reject) => {
        // Trusting the certificate itself as the CA: full chain + hostname validation must pass.
        const socket = connect({ host: "127.0.0.1", port, ca: made.certPem, servername: "localhost" }, () => {
          const spki = socket.getPeerX509Certificate()!.publicKey.export({ type: "spki", format: "der" });
          resolve({
            pin: toBase64url(createHash("sha256").update(spki).digest()),
            authorized: socket.authorized,
          });
          socket.end();
        });
        socket.on("error", reject);
      });
      expect(peer.authorized).toBe(true);
      expect(peer.pin).toBe(made.spkiSha256);
    } finally {
      server.close();
    }
  });
});

describe("operator-provided certificates", () => {
  it("loads a matching pair", async () => {
    const made = await createSelfSignedCertificate();
    await writeFile(join(dataDir, "c.pem"), made.certPem);
    await writeFile(join(dataDir, "k.pem"), made.keyPem);
    const loaded = await loadCertificate(join(dataDir, "c.pem"), join(dataDir, "k.pem"));
    expect(loaded.spkiSha256).toBe(made.spkiSha256);
  });

  it("refuses a key that is not the certificate's", async () => {
    const a = await createSelfSignedCertificate();
    const b = await createSelfSignedCertificate();
    await writeFile(join(dataDir, "c.pem"), a.certPem);
    await writeFile(join(dataDir, "k.pem"), b.keyPem);
    await expectCode(loadCertificate(join(dataDir, "c.pem"), join(dataDir, "k.pem")), "config.tls_invalid");
  });

  it("refuses garbage and missing files", async () => {
    const made = await createSelfSignedCertificate();
    await writeFile(join(dataDir, "c.pem"), "not a certificate");
    await writeFile(join(dataDir, "k.pem"), made.keyPem);
    await expectCode(loadCertificate(join(dataDir, "c.pem"), join(dataDir, "k.pem")), "config.tls_invalid");
    await writeFile(join(dataDir, "c.pem"), made.certPem);
    await writeFile(join(dataDir, "k.pem"), "not a key");
    await expectCode(loadCertificate(join(dataDir, "c.pem"), join(dataDir, "k.pem")), "config.tls_invalid");
    await expectCode(
      loadCertificate(join(dataDir, "nope.pem"), join(dataDir, "k.pem")),
      "config.tls_invalid",
    );
    expect(() => spkiPinOfCertificate("junk")).toThrow(/PEM/);
  });

  it("refuses a certificate whose key went missing rather than replacing it", async () => {
    await ensureServerCertificate(dataDir);
    await rm(join(dataDir, "tls", "key.pem"));
    await expectCode(ensureServerCertificate(dataDir), "config.tls_invalid");
  });
});

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const e = await promise.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isHandsafeError(e, code), `expected ${code}, got ${String(e)}`).toBe(true);
}
