// The public API process in one object: fastify on one plain-text port serving Connect-JSON
// (HTTP/1.1 or h2c, curl-able), gRPC (h2c) and gRPC-Web, plus GET /healthcheck.
import { readFileSync } from "node:fs";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import { Code, ConnectError } from "@connectrpc/connect";
import fastify, { LogController, type FastifyInstance } from "fastify";
import type { Orm } from "./db/database.js";
import type { Services } from "./services/index.js";
import type { LogLevel, Settings } from "./settings.js";
import type { HandlerDeps } from "./api/deps.js";
import { createDualServer, type DualServer } from "./api/dual-server.js";
import { apiInterceptor } from "./api/interceptors.js";
import { registerRoutes } from "./api/routes.js";
import { registerServiceProxy, registerServiceProxyUpgrades } from "./api/service-proxy.js";
import { humanLogStream } from "./log-format.js";

export const SERVER_VERSION: string = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

export interface AppOptions {
  settings: Settings;
  orm: Orm;
  services: Services;
  /** Log level (default settings.logLevel), or false for silence (in-process tests). Logs go to stderr. */
  logLevel?: LogLevel | false;
  /** How long close() lets in-flight calls run before aborting them; default 10 s. */
  shutdownTimeoutMs?: number;
  caFingerprintSha256?: string;
}

export type App = FastifyInstance & { server: DualServer };

export async function createApp(opts: AppOptions): Promise<App> {
  const level = opts.logLevel ?? opts.settings.logLevel;
  const app = fastify({
    logger: level === false ? false : { level, stream: process.env.DSTACK_SERVER_LOG_FORMAT === "json" ? process.stderr : humanLogStream(process.stderr) },
    serverFactory: (handler) => {
      const server = createDualServer(handler);
      registerServiceProxyUpgrades(server, opts.services, handler);
      return server;
    },
    // Connect streams can outlive fastify's defaults; per-call deadlines are the client's.
    requestTimeout: 0,
    // Per-request lines only when debugging; errors are logged by the API interceptor.
    logController: new LogController({ disableRequestLogging: level !== "debug" && level !== "trace" }),
  }) as unknown as App;

  const deps: HandlerDeps = {
    services: opts.services,
    settings: opts.settings,
    orm: opts.orm,
    serverInfo: { version: SERVER_VERSION, caFingerprintSha256: opts.caFingerprintSha256 ?? "" },
  };
  await app.register(fastifyConnectPlugin, {
    routes: registerRoutes(deps),
    interceptors: [apiInterceptor(opts.services, app.log)],
    shutdownTimeoutMs: opts.shutdownTimeoutMs ?? 10_000,
    shutdownError: new ConnectError("server is shutting down", Code.Unavailable),
    // Request bodies are bounded by fastify's bodyLimit for JSON; binary protocols here.
    readMaxBytes: 16 * 1024 * 1024,
  });

  app.get("/healthcheck", async () => ({ status: "running" }));
  registerServiceProxy(app, opts.services);

  // h2c sessions are not tracked by http.Server.close(): send them GOAWAY so open streams
  // finish and the port can close.
  app.addHook("preClose", (done) => {
    app.server.closeHttp2Sessions();
    done();
  });
  return app;
}
