import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    pool: "forks",
    // Vitest's default is one fork fewer than the cores: one on a machine of two, so every file ran
    // after the other. Most of the suite waits on child processes, sockets and the browser; two
    // forks there took the suite from 687 s to 445 s (1971 tests, the same passing).
    maxWorkers: Math.max(2, availableParallelism() - 1),
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ["default"],
    // Long streams hash on the worker thread in every test (core/crypto/backend/hash-lanes.ts), as
    // on a machine of three cores or more, whatever the cores of the machine running the tests.
    env: { HANDSAFE_HASH_WORKER: "on" },
  },
});
