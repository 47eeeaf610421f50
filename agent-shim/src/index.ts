// @dstack/agent-shim — see ../shared/DESIGN.md for what lands here.
export * from "./host/index.js";
export * from "./docker/index.js";
export * from "./shim/index.js";
export { createLogger, isLogLevel, silentLogger, LOG_LEVELS } from "./log.js";
export type { Logger, LoggerOptions, LogFields, LogLevel } from "./log.js";
export { main, HELP } from "./main.js";
export type { MainIo } from "./main.js";
