import { normalisePhoneNumber } from "../src/platform/notify/sms/phone.ts";
import { parsePhoneNumberWithError } from "libphonenumber-js/max";
import { parsePhoneNumberWithError as parseMin } from "libphonenumber-js/min";
let seq = 0; const next = () => `+49151${String(10_000_000 + (seq++ % 89_999_999)).slice(-8)}`;
function t(name: string, f: () => unknown, n = 20000) { for (let i = 0; i < 2000; i++) f(); const s = performance.now(); for (let i = 0; i < n; i++) f(); console.log(name.padEnd(30), ((performance.now() - s) * 1000 / n).toFixed(1), "µs"); }
t("normalise (fresh)", () => normalisePhoneNumber(next()));
t("max parse only", () => parsePhoneNumberWithError(next()));
t("max parse+isValid", () => parsePhoneNumberWithError(next()).isValid());
t("min parse+isValid", () => parseMin(next()).isValid());
t("max parse+isPossible", () => parsePhoneNumberWithError(next()).isPossible());
