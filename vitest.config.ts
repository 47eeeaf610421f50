import { defineConfig } from "vitest/config";

// One configuration for every package: unit tests sit beside the code they test,
// cross-package integration tests live in test/.
export default defineConfig({
  test: {
    include: ["{proto,server,agent-shim,agent-runner,cli}/src/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "test/bench/**"],
    reporters: ["default", "./test/helpers/summary-reporter.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
