// @dstack/cli: the `dstack` command and, later, the high-level TypeScript API it is built on.
export { main, buildProgram } from "./main.js";
export type { CliIO } from "./io.js";
export { CliError } from "./io.js";
