/**
 * The handset's updater (docs/protocols/updates-contract.md §Handset). One `checkAndInstall`:
 *
 *   GET assignment (signed) ─ none ─► done
 *     │ outside its install window ─► waiting_for_window (nothing reported)
 *     ▼
 *   notified ─► TUF refresh (root kept in the keystore) ─► target info for the assignment's path
 *     ▼
 *   downloading n% ─► verified ciphertext (length, hashes) ─► content key unwrapped ─► decrypted
 *   (a delta applied to the active image) into the inactive slot, image SHA-256/length checked
 *     ▼
 *   verified ─► pending ─► switch ─► health check ─ ok ─► installed (installedVersion)
 *                                                   └ no ─► switch back ─► rolled_back (reason)
 *   any failure ─► failed (reason = the error's code)
 *
 * No node:* imports: the same class runs in the browser's virtual handset (MemorySlotStore,
 * MemoryPartialStore) and in a Node simulated handset (slots-folder.ts).
 */
import { applyDelta } from "fossil-delta";
import { fromBase64url } from "../core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { Keystore } from "../handset/keystore.ts";
import type { DeviceWrapper } from "../management/device-wrapper.ts";
import type { ManagementClient } from "../management/handset.ts";
import { deriveSessionKey } from "../management/protocol.ts";
import { readDynamicKey } from "../management/sms-processor.ts";
import { ContentDecryptor, unwrapContentKey } from "./content.ts";
import { downloadTarget, type PartialStore } from "./download.ts";
import { ImageDigest, otherSlot, type SlotName, type SlotStore } from "./slots.ts";
import { TufClient, type TufTargetInfo, type TufTrustedState } from "./tuf/index.ts";

export const ASSIGNMENT_PATH = "/v1/updates/devices/me/assignment";
export const STATUS_PATH = "/v1/updates/devices/me/status";
export const TUF_PATH = "/v1/updates/tuf/";
export const CONTENT_PATH = "/v1/updates/content/";

export const tufStateEntry = (deviceId: string) => `updates/${deviceId}/tuf-state`;
/** The last state this device reported, and for which campaign (so a resumed run never goes back). */
export const reportedStateEntry = (deviceId: string) => `updates/${deviceId}/reported`;

/**
 * The order of reported states. The server refuses a report that goes back (campaigns.bad_transition),
 * and a run that resumes — a download cut by a restart, a verified slot not yet switched — would
 * otherwise report `notified` or `downloading` again.
 */
const STATE_RANK: Record<UpdateState, number> = {
  notified: 1,
  downloading: 2,
  verified: 3,
  installed: 4,
  failed: 4,
  rolled_back: 4,
};

export type UpdateState = "notified" | "downloading" | "verified" | "installed" | "failed" | "rolled_back";

export interface InstallWindow {
  startHourUtc: number;
  endHourUtc: number;
}

export interface Assignment {
  campaignId: string;
  packageId: string;
  tufPath: string;
  version: string;
  kind: "full" | "delta";
  fromVersion?: string;
  wrappedContentKey: string;
  installWindow: InstallWindow | null;
}

export interface StatusReport {
  campaignId: string;
  state: UpdateState;
  percent?: number;
  reason?: string;
  installedVersion?: string;
}

export type UpdateOutcome =
  | { status: "no_update" }
  | { status: "waiting_for_window"; campaignId: string; window: InstallWindow }
  | { status: "installed"; campaignId: string; version: string; slot: SlotName }
  | { status: "rolled_back"; campaignId: string; version: string; reason: string }
  | { status: "failed"; campaignId: string; code: string; message: string };

export interface UpdaterOptions {
  management: ManagementClient;
  device: DeviceWrapper;
  keystore: Keystore;
  slots: SlotStore;
  partial: PartialStore;
  /**
   * The TUF root shipped with the firmware. Without it, the first use fetches 1.root.json over the
   * management client's channel (pinned TLS on Node) and keeps it in the keystore.
   */
  trustedRoot?: Uint8Array;
  /** Download progress is reported to the server every this many percent (default 25). */
  percentStep?: number;
  download?: { maxAttempts?: number; retryDelayMs?: number; sleep?: (ms: number) => Promise<void> };
  clock?: () => number;
}

export interface CheckOptions {
  /** Every state reported, and each whole download percent. */
  onProgress?: (event: { state: UpdateState; percent?: number }) => void;
  /** The time the window and TUF expiries are judged at (default: the clock). */
  now?: Date;
}

function fail(code: string, message: string, status = 422): HandsafeError {
  return new HandsafeError(code, message, { status });
}

const HOUR = (v: unknown) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 24;

/** Checks the server's assignment at the boundary; null when there is none. */
export function parseAssignment(v: unknown): Assignment | null {
  if (v === null || v === undefined) return null;
  const bad = (field: string) => fail("updates.bad_assignment", `assignment: bad ${field}`, 502);
  if (typeof v !== "object" || Array.isArray(v)) throw bad("shape");
  const a = v as Record<string, unknown>;
  for (const k of ["campaignId", "packageId", "tufPath", "version", "wrappedContentKey"])
    if (typeof a[k] !== "string" || a[k] === "") throw bad(k);
  if (a["kind"] !== "full" && a["kind"] !== "delta") throw bad("kind");
  if (a["kind"] === "delta" && typeof a["fromVersion"] !== "string") throw bad("fromVersion");
  const w = a["installWindow"];
  if (w !== null && w !== undefined) {
    const win = w as Record<string, unknown>;
    if (typeof w !== "object" || !HOUR(win["startHourUtc"]) || !HOUR(win["endHourUtc"]))
      throw bad("installWindow");
  }
  return {
    campaignId: a["campaignId"] as string,
    packageId: a["packageId"] as string,
    tufPath: a["tufPath"] as string,
    version: a["version"] as string,
    kind: a["kind"],
    ...(typeof a["fromVersion"] === "string" ? { fromVersion: a["fromVersion"] } : {}),
    wrappedContentKey: a["wrappedContentKey"] as string,
    installWindow: (w as InstallWindow | null | undefined) ?? null,
  };
}

/**
 * Is `now` inside the window? Hours are UTC, start inclusive, end exclusive; a window whose end is
 * before its start runs over midnight (22→4); equal hours mean all day.
 */
export function insideWindow(window: InstallWindow | null, now: Date): boolean {
  if (!window || window.startHourUtc % 24 === window.endHourUtc % 24) return true;
  const h = now.getUTCHours();
  const { startHourUtc: s, endHourUtc: e } = window;
  return s < e ? h >= s && h < e : h >= s || h < e;
}

interface ImageFacts {
  version: string;
  sha256: string;
  length: number;
}

/** The target's custom must describe this assignment and this device; it names the image to expect. */
function imageFacts(info: TufTargetInfo, a: Assignment, model: string): ImageFacts {
  const c = (info.custom ?? {}) as Record<string, unknown>;
  const bad = (why: string) => fail("updates.target_mismatch", `target ${info.path}: ${why}`);
  if (c["packageId"] !== undefined && c["packageId"] !== a.packageId) throw bad("another package");
  const version = c["version"] ?? c["toVersion"];
  if (version !== a.version) throw bad(`version ${String(version)}, the assignment says ${a.version}`);
  if (c["kind"] !== a.kind) throw bad(`kind ${String(c["kind"])}, the assignment says ${a.kind}`);
  if (a.kind === "delta" && c["fromVersion"] !== a.fromVersion) throw bad("a delta from another version");
  const models = c["models"];
  if (!Array.isArray(models) || !models.includes(model))
    throw fail("updates.wrong_model", `target ${info.path} is not for model ${model}`, 409);
  const sha256 = c["imageSha256"];
  const length = c["imageLength"];
  if (typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256) || !Number.isSafeInteger(length))
    throw bad("no imageSha256 / imageLength");
  return { version: a.version, sha256, length: length as number };
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const c of chunks) {
    parts.push(c);
    size += c.length;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export class Updater {
  readonly #o: UpdaterOptions;
  readonly #clock: () => number;

  constructor(options: UpdaterOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
  }

  async checkAndInstall(options: CheckOptions = {}): Promise<UpdateOutcome> {
    const now = options.now ?? new Date(this.#clock());
    const res = await this.#o.management.request<{ assignment?: unknown }>("GET", ASSIGNMENT_PATH);
    const a = parseAssignment(res.body?.assignment);
    if (!a) return { status: "no_update" };
    if (!insideWindow(a.installWindow, now))
      return { status: "waiting_for_window", campaignId: a.campaignId, window: a.installWindow! };
    // Unwrap before any other request: the server wrapped under the dynamic key that signed the
    // request just made, and a later request may bring in a fresh key.
    let contentKey: Uint8Array | undefined;
    try {
      contentKey = await this.#unwrap(a);
      return await this.#install(a, contentKey, now, options);
    } catch (e) {
      const code = isHandsafeError(e) ? e.code : "updates.internal";
      const message = e instanceof Error ? e.message : String(e);
      await this.#report({ campaignId: a.campaignId, state: "failed", reason: code }, options).catch(
        () => undefined,
      );
      return { status: "failed", campaignId: a.campaignId, code, message };
    } finally {
      contentKey?.fill(0);
    }
  }

  async #unwrap(a: Assignment): Promise<Uint8Array> {
    const { device, keystore } = this.#o;
    const stored = await readDynamicKey(keystore, device.deviceId);
    if (!stored) throw fail("management.no_dynamic_key", "no dynamic key to open the content key with", 0);
    const session = device.withStaticKey((k) => deriveSessionKey(k, stored.key, device.deviceId, "content"));
    stored.key.wipe();
    try {
      const wrapped = fromBase64url(a.wrappedContentKey, "wrappedContentKey");
      return unwrapContentKey(wrapped, session.reveal(), {
        deviceId: device.deviceId,
        packageId: a.packageId,
      });
    } finally {
      session.wipe();
    }
  }

  async #install(
    a: Assignment,
    contentKey: Uint8Array,
    now: Date,
    options: CheckOptions,
  ): Promise<UpdateOutcome> {
    const { slots, partial, management, device } = this.#o;
    const base = await slots.active();
    const baseMeta = await slots.meta(base);
    if (baseMeta?.version === a.version) {
      // Installed before the report got through (a restart): say so again.
      await this.#report(
        { campaignId: a.campaignId, state: "installed", installedVersion: a.version },
        options,
      );
      return { status: "installed", campaignId: a.campaignId, version: a.version, slot: base };
    }
    if (a.kind === "delta" && baseMeta?.version !== a.fromVersion)
      throw fail(
        "updates.delta_base_mismatch",
        `a delta from ${a.fromVersion}, but the running image is ${baseMeta?.version ?? "unknown"}`,
        409,
      );
    await this.#report({ campaignId: a.campaignId, state: "notified" }, options);

    const info = await this.#targetInfo(a.tufPath, now);
    const facts = imageFacts(info, a, device.model);

    // Download: progress to the caller at every percent, to the server every `percentStep`.
    const step = this.#o.percentStep ?? 25;
    let reported = -1;
    let reports: Promise<void> = Promise.resolve();
    const progress = (percent: number) => {
      options.onProgress?.({ state: "downloading", percent });
      if (reported >= 0 && percent < 100 && percent - reported < step) return;
      reported = percent;
      reports = reports.then(() =>
        this.#report({ campaignId: a.campaignId, state: "downloading", percent }, {}),
      );
      // Awaited after the download; handled here so a failed download does not leave it dangling.
      reports.catch(() => undefined);
    };
    await downloadTarget({
      fetch: (headers) => management.requestStream("GET", CONTENT_PATH + info.fileName, { headers }),
      target: info,
      id: info.fileName,
      partial,
      onProgress: (p) => progress(p.percent),
      ...(this.#o.download ?? {}),
    });
    await reports;

    const slot = otherSlot(base);
    await this.#writeImage(a, contentKey, slot, base, facts);
    await this.#report({ campaignId: a.campaignId, state: "verified" }, options);
    await partial.clear();

    await slots.setPending(slot);
    await slots.switchTo(slot);
    const healthy = await slots.healthCheck(slot).catch(() => false);
    if (!healthy) {
      await slots.switchTo(base);
      const reason = "updates.health_check_failed";
      await this.#report({ campaignId: a.campaignId, state: "rolled_back", reason }, options);
      return { status: "rolled_back", campaignId: a.campaignId, version: a.version, reason };
    }
    await slots.confirm(slot);
    await this.#report(
      { campaignId: a.campaignId, state: "installed", installedVersion: a.version },
      options,
    );
    return { status: "installed", campaignId: a.campaignId, version: a.version, slot };
  }

  /** Decrypts the verified download into `slot` (a delta applied to `base`), checks the image, commits. */
  async #writeImage(
    a: Assignment,
    contentKey: Uint8Array,
    slot: SlotName,
    base: SlotName,
    facts: ImageFacts,
  ): Promise<void> {
    const { slots, partial } = this.#o;
    const writer = await slots.openWriter(slot, { version: a.version });
    const digest = new ImageDigest();
    const put = async (piece: Uint8Array) => {
      if (digest.length + piece.length > facts.length)
        throw fail("updates.image_mismatch", `the image exceeds its ${facts.length} bytes`);
      digest.update(piece);
      await writer.write(piece);
    };
    try {
      const decryptor = new ContentDecryptor(contentKey);
      if (a.kind === "full") {
        for await (const chunk of partial.read()) for (const p of decryptor.update(chunk)) await put(p);
        await put(decryptor.finish());
      } else {
        const parts: Uint8Array[] = [];
        for await (const chunk of partial.read()) parts.push(...decryptor.update(chunk));
        parts.push(decryptor.finish());
        const delta = await collect(
          (async function* () {
            yield* parts;
          })(),
        );
        const old = await collect(slots.read(base));
        let image: Uint8Array;
        try {
          image = applyDelta(old, delta);
        } catch (e) {
          throw new HandsafeError("updates.delta_invalid", "the delta does not apply to the running image", {
            status: 422,
            cause: e,
          });
        }
        for (let at = 0; at < image.length; at += 64 * 1024) await put(image.subarray(at, at + 64 * 1024));
      }
      if (digest.length !== facts.length || digest.hex() !== facts.sha256)
        throw fail("updates.image_mismatch", "the image does not match the signed imageSha256 / imageLength");
      await writer.commit();
    } catch (e) {
      await writer.abort();
      throw e;
    }
  }

  /** Refreshes TUF metadata from the trusted state in the keystore (first use: the root). */
  async #targetInfo(path: string, now: Date): Promise<TufTargetInfo> {
    const { keystore, device, management } = this.#o;
    const entry = tufStateEntry(device.deviceId);
    const fetchFile = async (name: string): Promise<Uint8Array | null> => {
      try {
        return (await management.requestRaw("GET", TUF_PATH + name, { signed: false })).body;
      } catch (e) {
        if (isHandsafeError(e) && e.status === 404) return null;
        throw e;
      }
    };
    const stored = await keystore.get(entry);
    let client: TufClient;
    if (stored) {
      client = TufClient.fromState(JSON.parse(fromUtf8(stored)) as TufTrustedState);
    } else {
      const root = this.#o.trustedRoot ?? (await fetchFile("1.root.json"));
      if (!root) throw fail("tuf.not_found", "the repository has no 1.root.json", 502);
      client = TufClient.fromTrustedRoot(root);
      await keystore.put(entry, utf8(JSON.stringify(client.state)));
    }
    await client.refresh((name) => fetchFile(name), {
      now,
      persist: (state) => keystore.put(entry, utf8(JSON.stringify(state))),
    });
    return client.getTargetInfo(path);
  }

  async #report(report: StatusReport, options: CheckOptions): Promise<void> {
    if (report.state !== "downloading")
      options.onProgress?.({
        state: report.state,
        ...(report.percent === undefined ? {} : { percent: report.percent }),
      });
    const { keystore, device, management } = this.#o;
    const entry = reportedStateEntry(device.deviceId);
    const last = await keystore.get(entry);
    if (last) {
      let before: { campaignId?: unknown; state?: unknown } = {};
      try {
        before = JSON.parse(fromUtf8(last)) as typeof before;
      } catch {
        // An unreadable record is as good as none: the server still refuses a report that goes back.
      }
      const rank = STATE_RANK[before.state as UpdateState];
      if (before.campaignId === report.campaignId && rank !== undefined && STATE_RANK[report.state] < rank)
        return;
    }
    await management.request("POST", STATUS_PATH, report);
    await keystore.put(entry, utf8(JSON.stringify({ campaignId: report.campaignId, state: report.state })));
  }
}
