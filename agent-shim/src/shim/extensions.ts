// The extensions `dstack-shim run` starts beside the executor: the embedded SSH server and the
// tunnel handler (openTunnel) register here. Each gets the executor and the identity and may add
// command handlers and a close hook (see ShimExtension in run.ts).
import type { ShimContext, ShimExtension } from "./run.js";

export type ShimExtensionFactory = (ctx: ShimContext) => ShimExtension | Promise<ShimExtension>;

export function defaultExtensions(): ShimExtensionFactory[] {
  return [];
}
