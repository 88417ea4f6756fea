/**
 * Update packages and the TUF root ceremony from the command line:
 *
 *   handsafe admin package-upload --file img --version 1.2.0 --models X,Y [--channel beta] [--min --max]
 *   handsafe admin packages
 *   handsafe admin package-delta --to pkg_… --from pkg_…
 *   handsafe tuf export-root-key --out root.key      (then the root lives offline only)
 *   handsafe tuf prepare-root [--rotate timestamp]    > unsigned.json
 *   handsafe tuf sign-root --key root.key < unsigned.json > signed.json   (offline: no server)
 *   handsafe tuf commit-root < signed.json
 */
import { closeSync, createReadStream, fsyncSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
import * as https from "node:https";
import { isIP } from "node:net";
import * as tls from "node:tls";
import type { Command } from "commander";
import { HandsafeError } from "../core/errors.ts";
import type { ServerAddress } from "../handset/handset.ts";
import { spkiSha256 } from "../handset/node-transport.ts";
import type { UpdatePackage } from "../updates/packages.ts";
import { type ExportedRootKey, signRootOffline } from "../updates/repository-service.ts";
import type { RootSigned } from "../updates/tuf/index.ts";
import { resolveAdminToken, resolveServer } from "./connect.ts";
import { type AdminOptions, adminCommand, print, withAdmin, withServer } from "./admin-command.ts";
import { createProgressBar } from "./progress.ts";

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new HandsafeError("cli.invalid_input", `${what} is not JSON`);
  }
}

/** A readable regular file's size, or cli.file_unreadable naming the file. */
function fileSize(file: string): number {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(file);
  } catch (e) {
    throw unreadable(file, e);
  }
  if (!st.isFile()) throw new HandsafeError("cli.file_unreadable", `${file} is not a file`);
  return st.size;
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    throw unreadable(file, e, what);
  }
}

function unreadable(file: string, e: unknown, what = "the file"): HandsafeError {
  const code = (e as { code?: unknown }).code;
  const why =
    code === "ENOENT" ? "it does not exist" : code === "EACCES" ? "permission denied" : String(code);
  return new HandsafeError("cli.file_unreadable", `cannot read ${what} ${file}: ${why}`);
}

// --- streaming upload ---------------------------------------------------------------------------

export interface UploadParams {
  version: string;
  models: string[];
  channel?: string;
  min?: string;
  max?: string;
}

/**
 * A TLS socket to the server whose key is checked against the pin before anything is sent (the
 * admin token is in the first request bytes).
 */
function pinnedSocket(url: URL, pin: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const host = url.hostname.replace(/^\[|\]$/g, "");
    const socket = tls.connect({
      host,
      port: Number(url.port || 443),
      ...(isIP(host) ? {} : { servername: host }),
      // The pin below is the trust decision (the embedded server's certificate is self-signed).
      rejectUnauthorized: false,
    });
    socket.once("error", (e) =>
      reject(
        new HandsafeError("transport.unreachable", `cannot reach ${url.host}: ${e.message}`, { status: 0 }),
      ),
    );
    socket.once("secureConnect", () => {
      const cert = socket.getPeerX509Certificate();
      if (!cert || spkiSha256(cert) !== pin) {
        socket.destroy();
        reject(
          new HandsafeError("transport.pin_mismatch", "the server's key is not the pinned one", {
            status: 0,
          }),
        );
        return;
      }
      resolve(socket);
    });
  });
}

/** Streams an image file to POST /v1/admin/updates/packages; memory stays at one read chunk. */
export async function uploadPackage(
  server: ServerAddress,
  token: string,
  file: string,
  params: UploadParams,
  onProgress?: (sent: number, total: number) => void,
): Promise<UpdatePackage> {
  const size = fileSize(file);
  const url = new URL(`${server.url.replace(/\/+$/, "")}/v1/admin/updates/packages`);
  url.searchParams.set("version", params.version);
  url.searchParams.set("models", params.models.join(","));
  url.searchParams.set("kind", "full");
  if (params.channel) url.searchParams.set("channel", params.channel);
  if (params.min) url.searchParams.set("min", params.min);
  if (params.max) url.searchParams.set("max", params.max);
  const socket = server.pin ? await pinnedSocket(url, server.pin) : undefined;
  const input = createReadStream(file, { highWaterMark: 256 * 1024 });
  return new Promise((resolveOnce, rejectOnce) => {
    let settled = false;
    const resolve = (v: UpdatePackage) => {
      if (settled) return;
      settled = true;
      resolveOnce(v);
    };
    const reject = (e: unknown) => {
      if (settled) return;
      settled = true;
      rejectOnce(e);
    };
    let answered = false;
    let continued = false;
    const request = https.request(
      url,
      {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/octet-stream",
          "content-length": String(size),
          accept: "application/json",
          // The server checks the request first and says 100 Continue; a refusal comes before the body.
          expect: "100-continue",
        },
        ...(socket ? { createConnection: () => socket } : {}),
      },
      (response) => {
        answered = true;
        // Refused before the go-ahead: the body is not sent at all.
        if (!continued) response.on("end", () => request.destroy());
        const chunks: Buffer[] = [];
        response.on("data", (c: Buffer) => chunks.push(c));
        response.on("error", reject);
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {
            body = undefined;
          }
          const status = response.statusCode ?? 0;
          if (status >= 400 || body === undefined) {
            const err = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
            reject(
              new HandsafeError(
                err?.code ?? "transport.http_error",
                err?.message ?? `upload answered HTTP ${status}`,
                {
                  status,
                },
              ),
            );
            return;
          }
          resolve(body as UpdatePackage);
        });
      },
    );
    request.on("error", (e) => {
      input.unpipe(request);
      input.destroy();
      const fail = () =>
        reject(
          e instanceof HandsafeError
            ? e
            : new HandsafeError("transport.unreachable", e.message, { status: 0 }),
        );
      // A server that refuses early (unknown model, too large) answers and closes while the body is
      // still going out: the write fails (EPIPE), but its answer is the one to report.
      setTimeout(fail, answered ? 5000 : 500).unref();
    });
    let sent = 0;
    input.on("error", (e) => request.destroy(e));
    request.on("continue", () => {
      continued = true;
      // Only now: a "data" listener would start the file flowing before anyone takes it.
      input.on("data", (chunk) => {
        sent += chunk.length;
        onProgress?.(sent, size);
      });
      input.pipe(request);
    });
  });
}

// --- commands -----------------------------------------------------------------------------------

export function registerUpdateCommands(program: Command): void {
  const admin = adminCommand(program);

  withServer(admin.command("package-upload").description("upload a full firmware image as an update package"))
    .requiredOption("--file <path>", "the image")
    .requiredOption("--version <version>", "its firmware version, e.g. 1.2.0")
    .requiredOption("--models <list>", "comma-separated device models it is for")
    .option("--channel <channel>", "release channel", "stable")
    .option("--min <version>", "lowest installed version it may be applied to")
    .option("--max <version>", "highest installed version it may be applied to")
    .action(
      async (
        o: AdminOptions & {
          file: string;
          version: string;
          models: string;
          channel: string;
          min?: string;
          max?: string;
        },
      ) => {
        const bar = createProgressBar({ label: "upload", total: fileSize(o.file) });
        const pkg = await uploadPackage(
          resolveServer(o),
          resolveAdminToken(o),
          o.file,
          {
            version: o.version,
            models: o.models.split(","),
            channel: o.channel,
            ...(o.min ? { min: o.min } : {}),
            ...(o.max ? { max: o.max } : {}),
          },
          (sent) => bar.update(sent),
        ).finally(() => bar.finish());
        print(pkg);
      },
    );

  withServer(admin.command("packages").description("list update packages")).action(async (o: AdminOptions) =>
    withAdmin(o, async (c) => print((await c.get("/v1/admin/updates/packages")).body)),
  );

  withServer(admin.command("package-delta").description("build a delta package between two full packages"))
    .requiredOption("--to <id>", "the package with the new image")
    .requiredOption("--from <id>", "the package with the old image")
    .action(async (o: AdminOptions & { to: string; from: string }) =>
      withAdmin(o, async (c) =>
        print(
          (
            await c.post(`/v1/admin/updates/packages/${encodeURIComponent(o.to)}/delta`, {
              fromPackageId: o.from,
            })
          ).body,
        ),
      ),
    );

  const tuf = program
    .command("tuf")
    .description("the update repository's TUF root: offline key and rotation");

  withServer(
    tuf
      .command("export-root-key")
      .description(
        "write the root key to a file and delete it from the server (the root is offline from then on)",
      ),
  )
    .requiredOption("--out <file>", "where to write the key (must not exist; mode 0600)")
    .action(async (o: AdminOptions & { out: string }) =>
      withAdmin(o, async (c) => {
        const key = (await c.post<ExportedRootKey>("/v1/admin/updates/tuf/root-key/export", {})).body;
        writeKeyFile(o.out, key);
        await c.delete(`/v1/admin/updates/tuf/root-key/${key.keyid}`);
        process.stderr.write(`root key ${key.keyid} written to ${o.out} and removed from the server\n`);
      }),
    );

  withServer(tuf.command("prepare-root").description("prepare root N+1 on the server; prints it unsigned"))
    .option("--rotate <role...>", "give these roles fresh keys (root, targets, snapshot, timestamp)", [])
    .action(async (o: AdminOptions & { rotate: string[] }) =>
      withAdmin(o, async (c) => {
        const roles = o.rotate.flatMap((r) => r.split(",")).filter((r) => r !== "");
        const res = await c.post<unknown>("/v1/admin/updates/tuf/root/prepare", { rotate: roles });
        process.stdout.write(`${JSON.stringify(res.body, null, 2)}\n`);
      }),
    );

  tuf
    .command("sign-root")
    .description("offline: sign prepared root metadata (stdin) with a key file; prints it with the signature")
    .requiredOption("--key <file>", "a key file written by export-root-key")
    .option("--signature-only", "print only {keyid, sig}")
    .action(async (o: { key: string; signatureOnly?: boolean }) => {
      const text = await readStdin();
      const keyFile = parseJson(readText(o.key, "the root key file"), "the key file") as ExportedRootKey;
      const signed = signRootOffline(text, keyFile);
      describeRoot(signed.signed);
      const mine = signed.signatures.find((s) => s.keyid === keyFile.keyid);
      process.stdout.write(`${JSON.stringify(o.signatureOnly ? mine : signed, null, 2)}\n`);
    });

  withServer(tuf.command("commit-root").description("commit the signed root (stdin) on the server")).action(
    async (o: AdminOptions) =>
      withAdmin(o, async (c) => {
        const input = parseJson(await readStdin(), "the signed root");
        print((await c.post("/v1/admin/updates/tuf/root/commit", input)).body);
      }),
  );
}

/** What the operator signs, on stderr: read it before carrying the signature back. */
function describeRoot(root: RootSigned): void {
  const lines = [`signing root version ${root.version}, expires ${root.expires}`];
  for (const [role, r] of Object.entries(root.roles))
    lines.push(
      `  ${role.padEnd(9)} threshold ${r.threshold}, keys ${r.keyids.map((k) => k.slice(0, 12)).join(", ")}`,
    );
  process.stderr.write(`${lines.join("\n")}\n`);
}

function writeKeyFile(path: string, key: ExportedRootKey): void {
  const fd = openSync(path, "wx", 0o600);
  try {
    writeSync(fd, `${JSON.stringify(key, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
