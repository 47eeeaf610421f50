#!/usr/bin/env node
// `dstack ui` runs this in a child process: the Ink dashboard (cli/src/ui/main.tsx). Ink's layout
// engine (yoga-layout) loads with a top-level await, which the CommonJS bundle of `dstack` cannot
// hold, so the dashboard lives outside it: in build/cli/dstack-ui.mjs (an ES module bundle made by
// `npm run build:cli`) while every source it was built from is unchanged, else the sources through
// tsx. Arguments: [--project P].
import { pathToFileURL } from "node:url";
import { freshBundle } from "./fresh-bundle.js";

// Ink draws only its last frame when it believes it runs under CI (is-in-ci reads CI and
// CONTINUOUS_INTEGRATION when Ink loads). `dstack ui` runs only on a terminal: it always draws.
delete process.env.CI;
delete process.env.CONTINUOUS_INTEGRATION;

try {
  const bundle = freshBundle("uiInputs", "dstack-ui.mjs");
  let uiMain;
  if (bundle) ({ uiMain } = await import(pathToFileURL(bundle).href));
  else {
    const { register } = await import("tsx/esm/api");
    register();
    ({ uiMain } = await import("../src/ui/main.tsx"));
  }
  process.exit(await uiMain(process.argv.slice(2)));
} catch (e) {
  process.stderr.write(`Unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
}
