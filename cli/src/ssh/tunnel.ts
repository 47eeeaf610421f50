// Tunnels to a run's job through the server: TunnelService.OpenRunTunnel (gRPC over HTTP/2: h2c
// for http:// servers, TLS for https://). `openRunTunnel` opens one and hands back a Duplex whose
// bytes are the job's (its SSH server, or a TCP port of its container). A `RunTunnels` shares one
// HTTP/2 connection among many tunnels (the port forwards of an attach: one tunnel per accepted
// connection); `dstack ssh-proxy` opens a single one and relays stdin/stdout through it.
//
// The tunnel Duplex half-closes like a socket (end() → the job sees EOF; the job's EOF → 'end'),
// and destroying it ends the call. Failures to open reject with a ConnectError naming the run.
import type { Duplex } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, type Http2SessionManager } from "@connectrpc/connect-node";
import { OpenRunTunnelRequestSchema, RunTunnelTarget, TunnelService, type OpenRunTunnelRequest, type OpenRunTunnelResponse } from "@dstack/proto/api";
import { AGENT_PORT_WINDOWS, TunnelDuplex, WideWindowSessionManager, type TunnelFrame } from "@dstack/proto/link";

export interface RunTunnelServer {
  /** The server's public URL, e.g. `http://127.0.0.1:3000`. */
  serverUrl: string;
  /** The user's bearer token. */
  token: string;
}

export interface RunTunnelRequest {
  project: string;
  run: string;
  /** Replica number (default 0). */
  replica?: number;
  /** Job number in the replica (default 0). */
  job?: number;
  /** The job's SSH server (default), or a TCP port of its container. */
  target?: "ssh" | "port";
  /** For `target: "port"`. */
  port?: number;
  /** Aborting closes the tunnel (and rejects while opening). */
  signal?: AbortSignal;
  /** How long to wait for the tunnel to open; default 30 s. */
  openTimeoutMs?: number;
}

/** What the server said when the tunnel opened. */
export interface RunTunnelInfo {
  jobSubmissionId: string;
  instanceName: string;
}

export interface OpenedRunTunnel {
  /** The job's bytes; half-closes like a socket. */
  tunnel: Duplex;
  info: RunTunnelInfo;
}

/** Tunnels to runs over one HTTP/2 connection to the server; `close()` ends them all. */
export class RunTunnels {
  private readonly session: Http2SessionManager;
  private readonly client: Client<typeof TunnelService>;
  private readonly token: string;

  constructor(server: RunTunnelServer, opts: { pingIdleConnection?: boolean } = {}) {
    const baseUrl = server.serverUrl.replace(/\/+$/, "");
    this.token = server.token;
    this.session = new WideWindowSessionManager(
      baseUrl,
      // PINGs prove the connection while tunnels are open. Not on an idle connection (a long-lived
      // attach may have none open): connect-node re-arms that ping after abort() and it would throw.
      { pingIntervalMs: 30_000, pingTimeoutMs: 15_000, pingIdleConnection: opts.pingIdleConnection ?? false },
      { settings: { initialWindowSize: AGENT_PORT_WINDOWS.streamBytes } },
    );
    this.client = createClient(TunnelService, createGrpcTransport({ baseUrl, sessionManager: this.session }));
  }

  /** Opens a tunnel; resolves once the server says bytes can flow. */
  async open(o: RunTunnelRequest): Promise<OpenedRunTunnel> {
    const abort = new AbortController();
    const onAbort = (): void => abort.abort(o.signal?.reason ?? new Error("aborted"));
    if (o.signal?.aborted) onAbort();
    o.signal?.addEventListener("abort", onAbort, { once: true });
    const tunnel = new TunnelDuplex({ cancel: (reason) => abort.abort(reason) });
    tunnel.once("close", () => o.signal?.removeEventListener("abort", onAbort));

    async function* requests(): AsyncGenerator<OpenRunTunnelRequest> {
      yield create(OpenRunTunnelRequestSchema, {
        frame: {
          case: "open",
          value: {
            projectName: o.project,
            runName: o.run,
            replicaNum: o.replica ?? 0,
            jobNum: o.job ?? 0,
            target: o.target === "port" ? RunTunnelTarget.PORT : RunTunnelTarget.SSH,
            port: o.port ?? 0,
          },
        },
      });
      for await (const f of tunnel.outgoing()) {
        // The public contract has no error frame: a failing client ends the call instead.
        if (f.case === "error") return abort.abort(new Error(f.message));
        yield create(OpenRunTunnelRequestSchema, { frame: f.case === "data" ? f : { case: "halfClose", value: {} } });
      }
    }

    const responses = this.client.openRunTunnel(requests(), { headers: { authorization: `Bearer ${this.token}` }, signal: abort.signal })[Symbol.asyncIterator]();
    let first: IteratorResult<OpenRunTunnelResponse>;
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeoutMs = o.openTimeoutMs ?? 30_000;
      first = await Promise.race([
        responses.next(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new ConnectError(`run '${o.run}': the tunnel did not open within ${timeoutMs} ms`, Code.DeadlineExceeded)), timeoutMs);
        }),
      ]);
      if (first.done || first.value.frame.case !== "opened") throw new ConnectError(`run '${o.run}': the server ended the tunnel before opening it`, Code.Unavailable);
    } catch (e) {
      abort.abort(e);
      tunnel.destroy();
      o.signal?.removeEventListener("abort", onAbort);
      throw ConnectError.from(e);
    } finally {
      clearTimeout(timer);
    }
    const opened = first.value.frame.value;

    async function* frames(): AsyncGenerator<TunnelFrame> {
      for (;;) {
        const r = await responses.next();
        if (r.done) return;
        const f = r.value.frame;
        if (f.case === "data") yield { case: "data", value: f.value };
        else if (f.case === "halfClose") yield { case: "halfClose" };
      }
    }
    tunnel.attach(frames());
    // Aborting after the open destroys the tunnel (the RPC's end is its error).
    abort.signal.addEventListener("abort", () => tunnel.destroyed || tunnel.destroy(abort.signal.reason instanceof Error ? abort.signal.reason : new Error(String(abort.signal.reason))), { once: true });
    return { tunnel, info: { jobSubmissionId: opened.jobSubmissionId, instanceName: opened.instanceName } };
  }

  /** Closes the connection and every tunnel on it. */
  close(): void {
    this.session.abort();
  }
}

/** One tunnel on its own connection, which closes with the tunnel. */
export async function openRunTunnel(server: RunTunnelServer, o: RunTunnelRequest): Promise<OpenedRunTunnel> {
  const tunnels = new RunTunnels(server);
  try {
    const opened = await tunnels.open(o);
    opened.tunnel.once("close", () => tunnels.close());
    return opened;
  } catch (e) {
    tunnels.close();
    throw e;
  }
}
