// Every public service is registered here, one handler module per service.
// To add yours: write `api/<service>.ts` exporting `xxxHandlers(deps: HandlerDeps)` that
// returns `Partial<ServiceImpl<typeof XxxService>>` (thin: validate, call one service method,
// map the view to proto), then add one `router.service(XxxService, xxxHandlers(deps))` line
// below. Auth and error mapping are already done for you by interceptors.ts; read the caller
// with `caller(ctx)` from context.ts. Methods left out answer Unimplemented.
import type { ConnectRouter } from "@connectrpc/connect";
import { FleetService, InstanceService, LogService, MetricsService, OfferService, ProjectService, RunService, SecretService, ServerService, TunnelService, UserService } from "@dstack/proto/api";
import type { HandlerDeps } from "./deps.js";
import { projectHandlers } from "./projects.js";
import { secretHandlers } from "./secrets.js";
import { serverHandlers } from "./server.js";
import { userHandlers } from "./users.js";
import { fleetHandlers } from "./fleets.js";
import { instanceHandlers } from "./instances.js";
import { logHandlers } from "./logs.js";
import { metricsHandlers } from "./metrics.js";
import { offerHandlers } from "./offers.js";
import { runHandlers } from "./runs.js";
import { tunnelHandlers } from "./tunnels.js";

export function registerRoutes(deps: HandlerDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(ServerService, serverHandlers(deps));
    router.service(UserService, userHandlers(deps));
    router.service(ProjectService, projectHandlers(deps));
    router.service(SecretService, secretHandlers(deps));
    router.service(RunService, runHandlers(deps));
    router.service(LogService, logHandlers(deps));
    router.service(FleetService, fleetHandlers(deps));
    router.service(InstanceService, instanceHandlers(deps));
    router.service(OfferService, offerHandlers(deps));
    router.service(MetricsService, metricsHandlers(deps));
    // Tunnel bytes are SSH (encrypted) or the user's own: never gzip them.
    router.service(TunnelService, tunnelHandlers(deps), { acceptCompression: [] });
  };
}
