// The shim process: joining, the link and its command handlers, the systemd unit.
export { joinServer, runShim, ShimError } from "./run.js";
export type { JoinOptions, RunShimOptions, ShimContext, ShimExtension } from "./run.js";
export { shimHandlers } from "./handlers.js";
export type { HandlerDeps } from "./handlers.js";
export { systemdUnit } from "./systemd.js";
export type { UnitOptions } from "./systemd.js";
export { SHIM_VERSION } from "./version.js";
export { defaultExtensions } from "./extensions.js";
export type { ShimExtensionFactory } from "./extensions.js";
