/**
 * The console's HTTP client: the SDK's own (handset/http-client.ts) over the browser's fetch, to the
 * origin the page came from, with the operator's admin token as a bearer token. The token is kept
 * in sessionStorage only (gone with the tab), and sent in a header, never a cookie: no request the
 * console makes can be forged by another site.
 */
import { createHttpClient, type HttpClient, withHeaders } from "../../handset/http-client.ts";

const TOKEN_KEY = "handsafe.adminToken";

export const origin = (): string => window.location.origin;

export function savedToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

export function saveToken(token: string | undefined): void {
  if (token === undefined) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

/** A client that sends `token` as the bearer on every request. */
export function adminApi(token: string): HttpClient {
  return withHeaders(createHttpClient({ baseUrl: origin() }), { authorization: `Bearer ${token}` });
}
