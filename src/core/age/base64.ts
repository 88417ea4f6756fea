/**
 * age v1 §Conventions: standard base64 (RFC 4648 §4) WITHOUT `=` padding; encoders write canonical
 * base64 (RFC 4648 §3.5) and decoders refuse non-canonical encodings and padding. The codec is
 * core/codec/base64.ts, shared with our JSON's base64url.
 */
import { base64Standard } from "../codec/base64.ts";

export const encodeBase64 = (bytes: Uint8Array): string => base64Standard.encode(bytes);

/** The bytes of canonical unpadded base64, or `undefined` for anything else (the caller names the failure). */
export const decodeBase64 = (text: string): Uint8Array | undefined => base64Standard.decode(text);
