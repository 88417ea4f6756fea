/**
 * The RFC 8941 subset lives in core now (src/core/http-signatures/structured-fields.ts), shared with
 * every RFC 9421 profile; this re-export keeps management's imports as they were.
 */
export * from "../core/http-signatures/structured-fields.ts";
