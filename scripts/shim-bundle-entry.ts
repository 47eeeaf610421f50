// Entry of the portable shim bundle (scripts/build-shim-bundle.ts): the command line, as
// agent-shim/bin/dstack-shim.js runs it from the sources.
import { main } from "../agent-shim/src/main.js";

void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
