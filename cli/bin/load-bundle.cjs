// Loads the CLI bundle (build/cli/dstack.cjs) as Node loads a CommonJS module, but through
// vm.Script so that V8's code cache (dstack.cjs.cache, made by `npm run build:cli`) can skip
// parsing and compiling it. A missing or rejected cache only costs that time.
"use strict";
const { readFileSync, writeFileSync } = require("node:fs");
const { createRequire, wrap } = require("node:module");
const { dirname } = require("node:path");
const vm = require("node:vm");

/** @returns {{ main(argv: string[]): Promise<number>, cacheRejected: boolean | undefined }} */
function loadBundle(file, { writeCache = false } = {}) {
  let cachedData;
  if (!writeCache) {
    try {
      cachedData = readFileSync(`${file}.cache`);
    } catch {
      cachedData = undefined;
    }
  }
  // No import() of a module outside the bundle may remain in it: vm.Script has no loader for one.
  const script = new vm.Script(wrap(readFileSync(file, "utf8")), { filename: file, cachedData });
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file));
  if (writeCache) {
    const { main } = module.exports;
    return {
      main: async (argv) => {
        const code = await main(argv);
        writeFileSync(`${file}.cache`, script.createCachedData());
        return code;
      },
      cacheRejected: undefined,
    };
  }
  return { main: module.exports.main, cacheRejected: cachedData ? script.cachedDataRejected : undefined };
}

module.exports = { loadBundle };
