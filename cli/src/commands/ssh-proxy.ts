// `dstack ssh-proxy RUN`: what ssh runs as its ProxyCommand for `ssh <run>`. It opens
// TunnelService.OpenRunTunnel on the server (gRPC over HTTP/2: h2c for http:// servers, TLS for
// https://) and relays bytes: stdin → tunnel, tunnel → stdout. Nothing connects to the host: the
// server relays through the tunnel the host's agent dialed home.
//
// Ending: stdin's end half-closes the tunnel (the job still sends until it closes); the tunnel's
// end (the job's side closed) closes our side too and resolves. Failures reject with a
// ConnectError whose message names the run (not found, not running, agent unreachable…).
import type { Readable, Writable } from "node:stream";
import { ConnectError } from "@connectrpc/connect";
import { openRunTunnel, type RunTunnelInfo } from "../ssh/tunnel.js";

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
export type SshProxyInfo = RunTunnelInfo;

/**
 * Relays `stdin`/`stdout` through a tunnel to the run's job until the job's side closes.
 * Resolves once the tunnel opened and then closed cleanly; `onOpen` hears when bytes can flow.
 */
export async function sshProxy(o: SshProxyOptions, onOpen?: (info: SshProxyInfo) => void): Promise<void> {
  const { tunnel, info } = await openRunTunnel(
    { serverUrl: o.serverUrl, token: o.token },
    {
      project: o.project,
      run: o.run,
      ...(o.replica !== undefined ? { replica: o.replica } : {}),
      ...(o.job !== undefined ? { job: o.job } : {}),
      ...(o.target ? { target: o.target } : {}),
      ...(o.port !== undefined ? { port: o.port } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
      ...(o.openTimeoutMs !== undefined ? { openTimeoutMs: o.openTimeoutMs } : {}),
    },
  ).catch((e: unknown) => {
    o.stdin.pause();
    throw e;
  });
  onOpen?.(info);
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
    o.stdin.unpipe(tunnel);
    o.stdin.pause();
    if (!tunnel.destroyed) tunnel.destroy();
  }
}
