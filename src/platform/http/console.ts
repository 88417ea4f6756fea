/**
 * Serves the built web console (src/console, `npm run build:console`): /console, the operator's
 * console, and /handset, the virtual handset the "get the app" text links to; their scripts and
 * styles under /console/assets/. The folder is read once at start: only the files found then are
 * served, by exact name, so no path from a request ever reaches the file system. Without a build
 * the pages answer 503 `console.not_built`, saying how to build them; the API is unaffected.
 *
 * Every page goes out with a Content-Security-Policy that allows only this origin's own scripts,
 * styles and API (no inline script, no framing), and the pages hold no secret of their own: the
 * console asks for the admin token and keeps it in the tab's sessionStorage.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join } from "node:path";
import { HandsafeError } from "../../core/errors.ts";
import type { App } from "./app.ts";

export const CONSOLE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
  "form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
};

interface Asset {
  type: string;
  body: Buffer;
}

/** Every file of the build (pages and assets), by its URL path; empty when there is no build. */
export function loadConsole(dir: string): Map<string, Asset> {
  const files = new Map<string, Asset>();
  const pages: Array<[string, string]> = [
    ["/console", "console.html"],
    ["/handset", "handset.html"],
  ];
  for (const [path, file] of pages) {
    const full = join(dir, file);
    if (existsSync(full)) files.set(path, { type: TYPES[".html"]!, body: readFileSync(full) });
  }
  const assets = join(dir, "assets");
  if (existsSync(assets))
    for (const name of readdirSync(assets)) {
      const type = TYPES[extname(name)];
      const full = join(assets, name);
      if (type && statSync(full).isFile())
        files.set(`/console/assets/${name}`, { type, body: readFileSync(full) });
    }
  return files;
}

export function registerConsole(app: App, dir: string): void {
  const files = loadConsole(dir);
  const notBuilt = () =>
    new HandsafeError(
      "console.not_built",
      `the web console is not built in ${dir}: run \`npm run build:console\` (npm start does it)`,
      { status: 503 },
    );
  const page = (path: string) => async (_request: unknown, reply: import("fastify").FastifyReply) => {
    const file = files.get(path);
    if (!file) throw notBuilt();
    return reply
      .type(file.type)
      .header("content-security-policy", CONSOLE_CSP)
      .header("x-content-type-options", "nosniff")
      .header("referrer-policy", "no-referrer")
      .header("cache-control", "no-cache")
      .send(file.body);
  };
  const hide = { schema: { hide: true } };
  app.get("/console", hide, page("/console"));
  app.get("/console/", hide, page("/console"));
  app.get("/handset", hide, page("/handset"));
  app.get("/handset/", hide, page("/handset"));
  app.get<{ Params: { name: string } }>("/console/assets/:name", hide, async (request, reply) => {
    const file = files.get(`/console/assets/${request.params.name}`);
    if (!file) {
      if (files.size === 0) throw notBuilt();
      throw new HandsafeError("console.not_found", "no such console file", { status: 404 });
    }
    // Vite names assets by their content hash: a name never changes meaning.
    return reply
      .type(file.type)
      .header("x-content-type-options", "nosniff")
      .header("cache-control", "public, max-age=31536000, immutable")
      .send(file.body);
  });
}
