/**
 * Builds an SDK entry as a browser would get it — Vite, the "browser" export conditions (so
 * `#crypto-backend` resolves to the web backend), nothing external — into a temporary folder, and
 * imports the result. `hasNodeImports` is the check every bundle test makes on the code.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "vite";

const ROOT = join(import.meta.dirname, "../..");

export interface BrowserBundle<T> {
  /** The bundle's module, imported. */
  module: T;
  /** The bundle's code, to look into. */
  code: string;
  remove(): void;
}

export async function buildBrowserBundle<T>(entry: string, name: string): Promise<BrowserBundle<T>> {
  const out = mkdtempSync(join(tmpdir(), `handsafe-${name}-`));
  try {
    await build({
      configFile: false,
      logLevel: "silent",
      root: ROOT,
      resolve: { conditions: ["browser", "module", "import", "default"] },
      build: {
        outDir: out,
        emptyOutDir: true,
        minify: false,
        lib: { entry, formats: ["es"], fileName: name },
        rollupOptions: { external: [] },
      },
    });
    const file = join(out, `${name}.js`);
    return {
      module: (await import(file)) as T,
      code: readFileSync(file, "utf8"),
      remove: () => rmSync(out, { recursive: true, force: true }),
    };
  } catch (e) {
    rmSync(out, { recursive: true, force: true });
    throw e;
  }
}

/** Any static, dynamic or CommonJS import of a node:* module. */
export function hasNodeImports(code: string): boolean {
  return /from\s+["']node:|require\(["']node:|import\(["']node:/.test(code);
}
