#!/usr/bin/env node
// The `dstack` command. The workspace runs TypeScript sources directly; `npm run build:cli`
// also makes a bundle (build/cli/dstack.cjs, with a V8 code cache) that starts several times
// faster. The bundle is used only while every source it was built from is unchanged; otherwise
// tsx runs the sources.
import { createRequire } from "node:module";
import { freshBundle } from "./fresh-bundle.js";

// `dstack ps | head`: a reader that went away ends the command quietly, as with any Unix tool.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (e) => {
    if (e.code === "EPIPE") process.exit(0);
    throw e;
  });
}

const bundle = freshBundle("inputs", "dstack.cjs");
let main;
if (bundle) ({ main } = createRequire(import.meta.url)("./load-bundle.cjs").loadBundle(bundle));
else {
  const { register } = await import("tsx/esm/api");
  register();
  ({ main } = await import("../src/main.ts"));
}
process.exitCode = await main(process.argv.slice(2));
