// @dstack/cli: the `dstack` command and the high-level TypeScript API it is built on.
//   import { Client } from "@dstack/cli";
export { main, buildProgram } from "./main.js";
export type { CliIO } from "./io.js";
export { CliError } from "./io.js";
export * from "./client/index.js";
export { EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, exitCodeForError, exitCodeForRun } from "./exit-codes.js";
