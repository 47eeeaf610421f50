// `dstack ssh-proxy RUN`: what ssh runs as its ProxyCommand for `ssh <run>`. It opens
// TunnelService.OpenRunTunnel on the server (gRPC over HTTP/2: h2c for http:// servers, TLS for
// https://) and relays bytes: stdin → tunnel, tunnel → stdout. Nothing connects to the host: the
// server relays through the tunnel the host's agent dialed home.
//
// Ending: stdin's end half-closes the tunnel (the job still sends until it closes); the tunnel's
// end (the job's side closed) closes our side too and resolves. Failures reject with a
// ConnectError whose message names the run (not found, not running, agent unreachable…).
import type { Readable, Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { OpenRunTunnelRequestSchema, RunTunnelTarget, TunnelService, type OpenRunTunnelRequest, type OpenRunTunnelResponse } from "@dstack/proto/api";
import { AGENT_PORT_WINDOWS, TunnelDuplex, WideWindowSessionManager, type TunnelFrame } from "@dstack/proto/link";

export interface SshProxyOptions {
  /** The server's public URL, e.g. `http://127.0.0.1:3000`. */
  serverUrl: string;
  /** The user's bearer token. */
  token: string;
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
  /** Bytes for the job (ssh's side of the ProxyCommand pipe). */
  stdin: Readable;
  /** Bytes from the job. */
  stdout: Writable;
  /** Aborting closes the tunnel and rejects. */
  signal?: AbortSignal;
  /** How long to wait for the tunnel to open; default 30 s. */
  openTimeoutMs?: number;
}

/** What the server said when the tunnel opened. */
export interface SshProxyInfo {
  jobSubmissionId: string;
  instanceName: string;
}

/**
 * Relays `stdin`/`stdout` through a tunnel to the run's job until the job's side closes.
 * Resolves once the tunnel opened and then closed cleanly; `onOpen` hears when bytes can flow.
 */
export async function sshProxy(o: SshProxyOptions, onOpen?: (info: SshProxyInfo) => void): Promise<void> {
  const baseUrl = o.serverUrl.replace(/\/+$/, "");
  const session = new WideWindowSessionManager(baseUrl, { pingIntervalMs: 30_000, pingTimeoutMs: 15_000 }, { settings: { initialWindowSize: AGENT_PORT_WINDOWS.streamBytes } });
  const client = createClient(TunnelService, createGrpcTransport({ baseUrl, sessionManager: session }));
  const abort = new AbortController();
  const onAbort = (): void => abort.abort(o.signal?.reason ?? new Error("aborted"));
  if (o.signal?.aborted) onAbort();
  o.signal?.addEventListener("abort", onAbort, { once: true });
  const tunnel = new TunnelDuplex({ cancel: (reason) => abort.abort(reason) });

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

  const responses = client.openRunTunnel(requests(), { headers: { authorization: `Bearer ${o.token}` }, signal: abort.signal })[Symbol.asyncIterator]();
  const cleanup = (): void => {
    o.signal?.removeEventListener("abort", onAbort);
    o.stdin.unpipe(tunnel);
    o.stdin.pause();
    session.abort();
  };

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
    cleanup();
    throw ConnectError.from(e);
  } finally {
    clearTimeout(timer);
  }
  onOpen?.({ jobSubmissionId: first.value.frame.value.jobSubmissionId, instanceName: first.value.frame.value.instanceName });

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

  try {
    await new Promise<void>((resolve, reject) => {
      tunnel.once("error", reject);
      tunnel.once("close", () => resolve());
      // The job's side closed: stop reading stdin and half-close ours, so the call ends cleanly.
      tunnel.once("end", () => {
        o.stdin.unpipe(tunnel);
        if (!tunnel.writableEnded) tunnel.end();
      });
      o.stdin.once("error", (e) => tunnel.destroy(e));
      o.stdout.once("error", (e) => tunnel.destroy(e));
      o.stdin.pipe(tunnel);
      tunnel.pipe(o.stdout, { end: false }); // the caller owns stdout (process.stdout must stay open)
    });
  } catch (e) {
    throw ConnectError.from(e);
  } finally {
    cleanup();
  }
}
