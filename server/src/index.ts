// @dstack/server — the core: settings, database, services, lifecycle rules.
// The Connect handlers (src/api) and the scheduler build on these.
export { loadSettings, type Settings, type DatabaseSettings } from "./settings.js";
export { openDatabase, withTransaction, type Orm, type Em } from "./db/database.js";
export { createServices, bootstrap, type Services, type Principal } from "./services/index.js";
export { DstackError, ERRORS, isDstackError, toConnectError, type ErrorCode } from "./errors.js";
export * as stateMachines from "./services/state-machines.js";
