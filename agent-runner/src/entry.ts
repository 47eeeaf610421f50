// The process entry (the esbuild bundle's input, and what bin/dstack-runner.js loads).
// `--version` answers before the rest is loaded: the shim and tests call it to probe the bundle.
import { RUNNER_VERSION } from "./version.js";

const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-v")) {
  process.stdout.write(`dstack-runner ${RUNNER_VERSION}\n`);
} else {
  import("./main.js")
    .then(({ main }) => main(argv))
    .then(
      (code) => process.exit(code),
      (e: unknown) => {
        process.stderr.write(`dstack-runner: fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
        process.exit(1);
      },
    );
}
