// Port forwarding while attached: a local listener per mapped container port; every accepted
// connection opens its own tunnel to that port of the job's container (TunnelService target PORT)
// and the two are spliced, half-closes and backpressure included. All tunnels share one HTTP/2
// connection to the server. A local port that is taken moves to the next free one (and says so).
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { ConnectError } from "@connectrpc/connect";
import type { PortMapping } from "@dstack/proto";
import { spliceStreams } from "@dstack/proto/link";
import { RunTunnels, type RunTunnelServer } from "./tunnel.js";

/** How many ports above a taken one are tried before any free port is taken. */
const NEXT_FREE_TRIES = 100;

export interface PortForward {
  containerPort: number;
  /** Where it listens. */
  localHost: string;
  localPort: number;
  /** The local port asked for (undefined: any); differs from localPort when that one was taken. */
  requestedPort?: number;
}

export interface PortForwardsOptions extends RunTunnelServer {
  project: string;
  run: string;
  replica?: number;
  job?: number;
  /** Local address to listen on; default 127.0.0.1. */
  host?: string;
  mappings: PortMapping[];
  /** A connection whose tunnel failed (once per distinct message and port). */
  onError?: (forward: PortForward, message: string) => void;
}

export interface PortForwards {
  forwards: PortForward[];
  /** Stops listening and closes every forwarded connection. */
  close(): Promise<void>;
}

function listen(server: Server, host: string, port: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      server.off("listening", onListening);
      if (e.code === "EADDRINUSE" || e.code === "EACCES") resolve(null);
      else reject(e);
    };
    const onListening = () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    };
    server.once("error", onError);
    server.once("listening", onListening);
    server.listen({ host, port, exclusive: true });
  });
}

/** Listens on `port`, else the next free port above it, else any. */
async function bind(server: Server, host: string, port: number | undefined): Promise<number> {
  if (port !== undefined) {
    for (let p = port; p <= Math.min(65535, port + NEXT_FREE_TRIES); p++) {
      const got = await listen(server, host, p);
      if (got !== null) return got;
    }
  }
  const got = await listen(server, host, 0);
  if (got === null) throw new Error(`no free local port on ${host}`);
  return got;
}

/**
 * The mappings to forward: the configuration's, with `overrides` (`--port`) replacing those of
 * the same container port and adding new ones. One entry per container port, in order.
 */
export function mergePortMappings(configured: readonly PortMapping[], overrides: readonly PortMapping[] = []): PortMapping[] {
  const byContainer = new Map<number, PortMapping>();
  for (const m of [...configured, ...overrides]) byContainer.set(m.containerPort, m);
  return [...byContainer.values()];
}

/** Starts listening for every mapping; resolves once all listen. */
export async function startPortForwards(o: PortForwardsOptions): Promise<PortForwards> {
  const host = o.host ?? "127.0.0.1";
  const tunnels = new RunTunnels(o);
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const forwards: PortForward[] = [];
  const reported = new Set<string>();
  let closed = false;
  try {
    for (const m of o.mappings) {
      const server = createServer({ allowHalfOpen: true, noDelay: true });
      servers.push(server);
      const localPort = await bind(server, host, m.localPort);
      const forward: PortForward = { containerPort: m.containerPort, localHost: host, localPort, ...(m.localPort !== undefined ? { requestedPort: m.localPort } : {}) };
      forwards.push(forward);
      server.on("connection", (socket: Socket) => {
        if (closed) return void socket.destroy();
        sockets.add(socket);
        socket.once("close", () => sockets.delete(socket));
        socket.on("error", () => {}); // the splice tears both sides down
        socket.pause();
        tunnels
          .open({ project: o.project, run: o.run, ...(o.replica ? { replica: o.replica } : {}), ...(o.job ? { job: o.job } : {}), target: "port", port: m.containerPort })
          .then(({ tunnel }) => {
            if (closed || socket.destroyed) return void tunnel.destroy();
            tunnel.on("error", () => {});
            spliceStreams(socket, tunnel);
            socket.resume();
          })
          .catch((e: unknown) => {
            socket.destroy();
            if (closed) return;
            const message = ConnectError.from(e).rawMessage;
            const key = `${m.containerPort}\0${message}`;
            if (!reported.has(key)) {
              reported.add(key);
              o.onError?.(forward, message);
            }
          });
      });
    }
  } catch (e) {
    closed = true;
    for (const s of servers) s.close();
    tunnels.close();
    throw e;
  }
  return {
    forwards,
    async close() {
      if (closed) return;
      closed = true;
      // A server's close waits for its connections: end those first.
      const done = servers.map((s) => new Promise<void>((r) => s.close(() => r())));
      for (const s of sockets) s.destroy();
      tunnels.close();
      await Promise.all(done);
    },
  };
}
