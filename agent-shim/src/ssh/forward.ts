// direct-tcpip (`ssh -L`, IDE port forwarding): where a destination the client names lands, and
// the byte pump between the SSH channel and the TCP connection.
import net from "node:net";
import os from "node:os";
import type { ServerChannel } from "ssh2";
import type { LoginTarget } from "./types.js";

function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return h === "localhost" || h === "::1" || h === "[::1]" || h === "::ffff:127.0.0.1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * The address to dial for a destination named by the client, seen from inside the container:
 * loopback is the host's loopback under host networking and the container's IP under bridge
 * networking; any other name or address is dialled as given (from the shim's network namespace,
 * which reaches what the container reaches). Undefined when a bridge container has no IP.
 */
export function forwardHost(destIP: string, target: LoginTarget): string | undefined {
  if (!isLoopback(destIP)) return destIP;
  if (target.networkMode === "host") return destIP.includes(":") ? "::1" : "127.0.0.1";
  return target.containerIp || undefined;
}

/** Whether `host` names this machine: loopback, the unspecified address, its hostname or an interface address. */
export function isLocalAddress(host: string, extra: readonly string[] = []): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (isLoopback(h) || h === "0.0.0.0" || h === "::" || extra.includes(h)) return true;
  if (h === os.hostname().toLowerCase()) return true;
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.address.toLowerCase() === h) return true;
  }
  return false;
}

/** Opens a TCP connection, failing after `timeoutMs` without one. */
export function connectTcp(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port, allowHalfOpen: true });
    const timer = setTimeout(() => sock.destroy(new Error(`connect to ${host}:${port} timed out`)), timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      sock.off("error", reject);
      sock.setNoDelay(true);
      resolve(sock);
    });
    sock.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * Pumps bytes both ways with backpressure and half-close: the client's EOF ends the socket's write
 * side, the socket's EOF sends EOF (and close) on the channel. An error on either side closes both.
 */
export function bridge(channel: ServerChannel, sock: net.Socket): void {
  sock.on("error", () => channel.destroy());
  channel.on("error", () => sock.destroy());
  channel.on("close", () => sock.destroy());
  channel.pipe(sock);
  sock.pipe(channel);
}
