// The extensions `dstack-shim run` starts beside the executor: the embedded SSH server and the
// tunnel handler (openTunnel). Each gets the executor and the identity and may add command
// handlers and a close hook (see ShimExtension in run.ts).
import { join } from "node:path";
import { LinkCallError, acceptTunnel, agentTransport, serveTunnelToTcp } from "@dstack/proto/link";
import { LinkErrorCode, TunnelTarget } from "@dstack/proto/agent";
import type { TaskExecutor } from "../docker/index.js";
import { authorizedKeyMatches, createShimSshServer, type LoginTarget, type ShimSshServer } from "../ssh/index.js";
import type { ShimContext, ShimExtension } from "./run.js";

export type ShimExtensionFactory = (ctx: ShimContext) => ShimExtension | Promise<ShimExtension>;

export interface ShimExtensionOptions {
  /** Also serve SSH on this host port for LAN access (0 = any free port); tunnels need no port. */
  sshPort?: number;
  sshHost?: string;
}

export function defaultExtensions(o: ShimExtensionOptions = {}): ShimExtensionFactory[] {
  return [(ctx) => sshAndTunnels(ctx, o)];
}

/** The container IP on its first network: where a bridge task's "localhost" forwards go. */
async function containerIp(executor: TaskExecutor, containerId: string): Promise<string | undefined> {
  const info = await executor.docker.getContainer(containerId).inspect();
  const nets = Object.values(info.NetworkSettings?.Networks ?? {});
  return nets.find((n) => n?.IPAddress)?.IPAddress || undefined;
}

async function loginTarget(executor: TaskExecutor, taskId: string): Promise<LoginTarget | null> {
  const t = executor.loginTarget(taskId);
  if (!t) return null;
  return {
    containerId: t.containerId,
    containerUser: t.containerUser || undefined,
    networkMode: t.networkMode,
    containerIp: t.networkMode === "bridge" ? await containerIp(executor, t.containerId) : undefined,
  };
}

/**
 * One SSH server for every task: a login reaches the task its tunnel is bound to, or (on the LAN
 * port) the task whose container name or id is the login name; the key must be one the server
 * sent with that task.
 */
async function sshAndTunnels(ctx: ShimContext, o: ShimExtensionOptions): Promise<ShimExtension> {
  const { executor, log } = ctx;
  const ssh: ShimSshServer = createShimSshServer({
    hostKeyPath: join(ctx.home, "ssh_host_ed25519_key"),
    docker: executor.docker,
    logger: { info: (m, f) => log.debug(m, f ?? {}), warn: (m, f) => log.warn(m, f ?? {}) },
    async resolveLogin({ username, publicKey, taskId }) {
      const id =
        taskId ??
        executor
          .list()
          .map((t) => executor.loginTarget(t.taskId))
          .find((t) => t && (t.containerName === username || t.taskId === username))?.taskId;
      if (!id) return null;
      const t = executor.loginTarget(id);
      if (!t || !authorizedKeyMatches(t.authorizedKeys, publicKey)) return null;
      return loginTarget(executor, id);
    },
  });
  if (o.sshPort !== undefined) {
    const port = await ssh.listen(o.sshPort, o.sshHost ?? "0.0.0.0");
    log.info("ssh server listening", { port, fingerprint: ssh.hostKey.fingerprint });
  }
  // One HTTP/2 connection to the agent port carries every tunnel of this shim.
  const id = ctx.identity;
  const { transport, session } = agentTransport(id.serverUrl, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem, servername: id.servername });
  return {
    handlers: {
      async openTunnel(c, cctx) {
        const tunnel = await acceptTunnel({ transport, tunnelId: c.tunnelId, signal: cctx.signal });
        switch (c.target) {
          case TunnelTarget.SSH:
            ssh.handleConnection(tunnel, { taskId: c.taskId || undefined });
            return {};
          case TunnelTarget.CONTAINER_PORT: {
            const t = await loginTarget(executor, c.taskId);
            if (!t) {
              tunnel.destroy();
              throw new LinkCallError(`task ${c.taskId} has no running container`, LinkErrorCode.NOT_FOUND);
            }
            const host = t.networkMode === "bridge" ? (t.containerIp ?? "127.0.0.1") : "127.0.0.1";
            await serveTunnelToTcp(tunnel, host, c.port);
            return {};
          }
          case TunnelTarget.HOST_PORT:
            await serveTunnelToTcp(tunnel, c.host || "127.0.0.1", c.port);
            return {};
          default:
            tunnel.destroy();
            throw new LinkCallError(`unknown tunnel target ${c.target}`, LinkErrorCode.INVALID_ARGUMENT);
        }
      },
    },
    async close() {
      await ssh.close();
      session.abort();
    },
  };
}
