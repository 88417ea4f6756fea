import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ["default"],
    // Long streams hash on the worker thread in every test (core/crypto/backend/hash-lanes.ts), as
    // on a machine of three cores or more, whatever the cores of the machine running the tests.
    env: { HANDSAFE_HASH_WORKER: "on" },
  },
});
