// ServerService: public facts about the server (no token needed).
import type { ServiceImpl } from "@connectrpc/connect";
import type { ServerService } from "@dstack/proto/api";
import type { HandlerDeps } from "./deps.js";

/** Major version of the public API; clients refuse a server with a different one. */
export const API_VERSION = "1";

export function serverHandlers(deps: HandlerDeps): Partial<ServiceImpl<typeof ServerService>> {
  return {
    getServerInfo: () => ({
      serverVersion: deps.serverInfo.version,
      apiVersion: API_VERSION,
      agentUrl: `https://${deps.settings.host}:${deps.settings.agentPort}`,
      caFingerprintSha256: deps.serverInfo.caFingerprintSha256,
    }),
  };
}
