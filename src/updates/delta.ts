/**
 * Binary deltas between firmware images: the Fossil SCM delta format (fossil-delta, BSD), which
 * carries its own target size and a checksum of the result. The server makes a delta from the
 * full image of `fromVersion` to the new image; the handset applies it to its active slot's image
 * and then checks the result against the target image's SHA-256 from TUF (`imageSha256`).
 *
 * Both images are held in memory while the delta is made, so each is capped at
 * MAX_DELTA_IMAGE_BYTES (256 MiB); larger images ship as full packages. fossil-delta builds its
 * output in a plain JS array (8 bytes per byte while it works), so a delta near the cap needs
 * several GiB of heap: the cap is a ceiling, not a recommendation.
 */
import { applyDelta, createDelta, getDeltaTargetSize } from "fossil-delta";
import { HandsafeError } from "../core/errors.ts";

export const MAX_DELTA_IMAGE_BYTES = 256 * 1024 * 1024;

function checkSize(what: string, bytes: Uint8Array): void {
  if (bytes.length > MAX_DELTA_IMAGE_BYTES)
    throw new HandsafeError(
      "updates.delta_too_large",
      `${what} is ${bytes.length} bytes; deltas are made for images up to ${MAX_DELTA_IMAGE_BYTES} bytes`,
      { status: 413 },
    );
}

/** The delta that turns `oldImage` into `newImage`. */
export function createImageDelta(oldImage: Uint8Array, newImage: Uint8Array): Uint8Array {
  checkSize("the old image", oldImage);
  checkSize("the new image", newImage);
  return createDelta(oldImage, newImage);
}

/** `oldImage` with `delta` applied; updates.delta_invalid (422) when the delta does not fit it. */
export function applyImageDelta(
  oldImage: Uint8Array,
  delta: Uint8Array,
  maxOutput = MAX_DELTA_IMAGE_BYTES,
): Uint8Array {
  let size: number;
  try {
    size = getDeltaTargetSize(delta);
  } catch (e) {
    throw invalid(e);
  }
  if (size > maxOutput)
    throw new HandsafeError("updates.delta_too_large", `the delta would produce ${size} bytes`, {
      status: 413,
    });
  try {
    return applyDelta(oldImage, delta, { verifyChecksum: true });
  } catch (e) {
    throw invalid(e);
  }
}

function invalid(cause: unknown): HandsafeError {
  return new HandsafeError(
    "updates.delta_invalid",
    `the delta does not apply to this image (${cause instanceof Error ? cause.message : String(cause)})`,
    { status: 422, cause },
  );
}
