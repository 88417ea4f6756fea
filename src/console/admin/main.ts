/**
 * The operator's console at /console: sign in with the admin token, then the registry, update
 * campaigns (with their progress, refreshed while one runs), messaging senders, the built-in SMS
 * centre's texts and the audit log with its chain check. Everything goes through the admin API
 * (/v1/admin/…), which checks the token on every call; the console holds no state of its own.
 */
import type { HttpClient } from "../../handset/http-client.ts";
import { adminApi, saveToken, savedToken } from "../shared/api.ts";
import { errorLine, h, show } from "../shared/dom.ts";
import { VIEWS } from "./views.ts";

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
const signout = document.getElementById("signout") as HTMLButtonElement;

/** The timer of the view on screen (a view that refreshes itself sets it). */
let refresh: ReturnType<typeof setInterval> | undefined;

function signIn(): void {
  nav.replaceChildren();
  signout.hidden = true;
  const input = h("input", {
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    size: 48,
    "aria-label": "Admin token",
  });
  const status = h("div");
  const form = h(
    "form",
    {
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const token = input.value.trim();
        try {
          // Any admin-only read proves the token.
          await adminApi(token).get("/v1/admin/senders");
          saveToken(token);
          route();
        } catch (e) {
          show(status, errorLine(e));
        }
      },
    },
    h("label", {}, "Admin token", input),
    h("button", { type: "submit" }, "Sign in"),
  );
  show(
    main,
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Sign in"),
      h(
        "p",
        { class: "muted" },
        "The server wrote its admin token to a file when it first started (npm start prints where).",
      ),
      form,
      status,
    ),
  );
  input.focus();
}

async function route(): Promise<void> {
  if (refresh !== undefined) clearInterval(refresh);
  refresh = undefined;
  const token = savedToken();
  if (!token) return signIn();
  const api: HttpClient = adminApi(token);
  const name = window.location.hash.replace(/^#\/?/, "") || "overview";
  const view = VIEWS.find((v) => v.name === name) ?? VIEWS[0]!;
  show(
    nav,
    ...VIEWS.map((v) =>
      h("a", { href: `#/${v.name}`, "aria-current": v === view ? "page" : undefined }, v.title),
    ),
  );
  signout.hidden = false;
  const body = h("div");
  show(main, body);
  const render = async () => {
    try {
      await view.render(body, api);
    } catch (e) {
      if (isUnauthenticated(e)) {
        saveToken(undefined);
        return signIn();
      }
      show(body, errorLine(e));
    }
  };
  await render();
  if (view.refreshMs) refresh = setInterval(() => void render(), view.refreshMs);
}

const isUnauthenticated = (e: unknown) =>
  typeof e === "object" && e !== null && (e as { code?: string }).code === "auth.unauthenticated";

signout.addEventListener("click", () => {
  saveToken(undefined);
  route();
});
window.addEventListener("hashchange", () => void route());
void route();
