// The agent port: mutual-TLS HTTP/2 serving enrollment and the agent links (connect-node, so the
// wire is plain gRPC and stock gRPC clients work). Enroll is the one call allowed without a client
// certificate, so TLS asks for one but lets the handshake finish; every other call checks it.
import http2 from "node:http2";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { TunnelService } from "@dstack/proto/agent";
import { AGENT_PORT_WINDOWS, generateKey, type AgentKindName } from "@dstack/proto/link";
import type { Orm } from "../db/database.js";
import { Fleet, Instance, Job, build } from "../db/entities.js";
import type { Settings } from "../settings.js";
import { issueServerCertificate, loadOrCreateCa, type CertificateAuthority } from "./ca.js";
import type { MeshDataHooks } from "./data-hooks.js";
import { meshErr } from "./errors.js";
import { JoinTokens, type ConsumedJoinToken } from "./join-tokens.js";
import { DEFAULT_LINK_SETTINGS, Links, type LinkSettings } from "./links.js";
import { kPeer, peerFromSocket } from "./peer.js";
import { Revocations } from "./revocations.js";
import { issueForKey, meshRoutes, type MeshPolicy } from "./services.js";
import { DEFAULT_TUNNEL_SETTINGS, TunnelBroker, type TunnelSettings } from "./tunnels.js";

export { JoinTokens, DEFAULT_TOKEN_TTL_MS, type CreateJoinTokenOptions, type CreatedJoinToken, type JoinTokenKind } from "./join-tokens.js";
export { Links, AgentLink, DEFAULT_LINK_SETTINGS, type LinkSettings, type CallOptions, type LinkEvents, type DisconnectReason } from "./links.js";
export { MeshError, MESH_ERRORS, type MeshErrorCode } from "./errors.js";
export type { MeshPolicy } from "./services.js";
export { TunnelBroker, TunnelDuplex, TunnelError, DEFAULT_TUNNEL_SETTINGS, type TunnelSettings, type OpenTunnelOptions, type TunnelTargetName } from "./tunnels.js";
export { meshDataHooks, type MeshDataHooks, type MeshLogEntry, type MeshLogSource } from "./data-hooks.js";
export { CODE_CHUNK_BYTES } from "./code.js";

export interface MeshServerOptions {
  settings: Pick<Settings, "homeDir">;
  orm: Orm;
  /** Heartbeats, unreachability and call deadlines; defaults in DEFAULT_LINK_SETTINGS. */
  link?: Partial<LinkSettings>;
  /** Extra DNS names or IPs for the server certificate (e.g. the public host name agents dial). */
  serverNames?: string[];
  /** Client certificate lifetime; default 24 h. */
  certificateLifetimeMs?: number;
  /** Overrides of how shims get instance ids and how task ownership is checked. */
  policy?: Partial<MeshPolicy>;
  /** Tunnel deadlines; defaults in DEFAULT_TUNNEL_SETTINGS. */
  tunnel?: Partial<TunnelSettings>;
  /** Log storage and code blobs for runners; `meshDataHooks(orm, services)` builds them from the services. */
  data?: MeshDataHooks;
}

export interface MeshServer {
  listen(port: number, host?: string): Promise<{ port: number }>;
  close(): Promise<void>;
  links: Links;
  /** Byte tunnels to agents: `tunnels.open({ instanceId, target, … })` resolves with a Duplex. */
  tunnels: TunnelBroker;
  joinTokens: JoinTokens;
  ca: CertificateAuthority;
  /** SHA-256 of the CA certificate, lowercase hex: what agents pass as `--ca-sha256`. */
  caFingerprint: string;
  /** Refuses the identity from now on and drops its link. */
  revoke(kind: AgentKindName, id: string): void;
  /**
   * A runner identity for job submission `jobSubmissionId`, made on the server: a fresh P-256 key
   * and its client certificate, issued exactly as Enroll would. It rides in the task's bootstrap
   * so the runner links at once instead of enrolling. Throws MESH_REVOKED for a revoked job.
   */
  issueRunnerIdentity(jobSubmissionId: string): RunnerIdentity;
}

/** What issueRunnerIdentity returns. */
export interface RunnerIdentity {
  certPem: string;
  keyPem: string;
  notAfter: Date;
  renewAfter: Date;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Default policy on the shared schema: a shim becomes the instance its token names, the instance it claims (same fleet), or a new one. */
function dbPolicy(orm: Orm): Omit<MeshPolicy, "certificateLifetimeMs"> {
  // New instances of one fleet are numbered one at a time: hosts enrolling together with a
  // reusable token would otherwise all count the same rows and share a name.
  const numbering = new Map<string, Promise<unknown>>();
  const serially = <T>(key: string, f: () => Promise<T>): Promise<T> => {
    const run = (numbering.get(key) ?? Promise.resolve()).then(f, f);
    const tail = run.catch(() => undefined);
    numbering.set(key, tail);
    void tail.then(() => numbering.get(key) === tail && numbering.delete(key));
    return run;
  };
  return {
    async resolveShim(token: ConsumedJoinToken, identity) {
      const em = orm.em.fork();
      const wanted = token.boundId ?? identity?.instanceId;
      if (wanted && UUID.test(wanted)) {
        const inst = await em.findOne(Instance, { id: wanted, project: token.projectId, deleted: false });
        if (inst && (token.boundId || (inst.fleet?.id ?? null) === token.fleetId)) return inst.id;
      }
      if (token.boundId) throw meshErr("MESH_NOT_FOUND", { what: "Instance", id: token.boundId });
      return serially(token.fleetId ?? `project:${token.projectId}`, async () => {
        const fleet = token.fleetId ? await em.findOne(Fleet, { id: token.fleetId }) : null;
        const count = fleet ? await em.count(Instance, { fleet: fleet.id }) : 0;
        const inst = build(Instance, {
          name: `${fleet?.name ?? "host"}-${count}`,
          instanceNum: count,
          backend: "remote",
          hostInfo: identity ? { hostname: identity.hostname, machineId: identity.machineId, agentVersion: identity.agentVersion } : null,
        });
        inst.project = em.getReference("Project", token.projectId) as never;
        inst.fleet = fleet ? (em.getReference("Fleet", fleet.id) as never) : null;
        await em.persistAndFlush(inst);
        return inst.id;
      });
    },
    async ownsTask(instanceId, taskId) {
      if (!UUID.test(taskId)) return false;
      return (await orm.em.fork().count(Job, { id: taskId, instance: instanceId })) > 0;
    },
  };
}

export function createMeshServer(o: MeshServerOptions): MeshServer {
  const ca = loadOrCreateCa(o.settings.homeDir);
  const joinTokens = new JoinTokens(o.orm);
  const links = new Links({ ...DEFAULT_LINK_SETTINGS, ...o.link });
  const revocations = new Revocations(o.settings.homeDir);
  const policy: MeshPolicy = { certificateLifetimeMs: o.certificateLifetimeMs ?? 24 * 3600_000, ...dbPolicy(o.orm), ...o.policy };
  const { certPem, keyPem } = issueServerCertificate(ca, o.serverNames);
  const tunnels = new TunnelBroker(links, revocations, { ...DEFAULT_TUNNEL_SETTINGS, ...o.tunnel });
  const routes = meshRoutes({ ca, joinTokens, links, revocations, policy, data: o.data });
  const handler = connectNodeAdapter({
    routes: (router) => {
      routes(router);
      router.service(TunnelService, tunnels.service(), TunnelBroker.handlerOptions);
    },
    contextValues: (req) => createContextValues().set(kPeer, peerFromSocket(req.socket as TLSSocket)),
  });
  const server = http2.createSecureServer(
    {
      key: keyPem,
      cert: certPem + ca.certPem, // send the CA too: agents check it against their pinned fingerprint
      ca: ca.certPem,
      requestCert: true,
      rejectUnauthorized: false,
      allowHTTP1: false,
      settings: { initialWindowSize: AGENT_PORT_WINDOWS.streamBytes }, // see AGENT_PORT_WINDOWS
    },
    handler,
  );
  const sessions = new Set<http2.ServerHttp2Session>();
  // Every TCP connection, for close(): after a reconnect storm some sockets were left with no
  // HTTP/2 session (their TLS side torn down mid-way) and server.close() waited for them forever.
  const sockets = new Set<Socket>();
  server.on("connection", (c: Socket) => {
    sockets.add(c);
    c.once("close", () => sockets.delete(c));
  });
  server.on("session", (s) => {
    sessions.add(s);
    s.setLocalWindowSize(AGENT_PORT_WINDOWS.connectionBytes);
    s.on("close", () => sessions.delete(s));
  });
  return {
    links,
    tunnels,
    joinTokens,
    ca,
    caFingerprint: ca.fingerprint,
    issueRunnerIdentity(jobSubmissionId) {
      if (revocations.isRevoked("runner", jobSubmissionId)) throw meshErr("MESH_REVOKED", { kind: "runner", id: jobSubmissionId });
      const { privateKeyPem, publicKey } = generateKey();
      const { certPem, notAfter, renewAfter } = issueForKey({ ca, policy }, "runner", jobSubmissionId, publicKey);
      return { certPem, keyPem: privateKeyPem, notAfter, renewAfter };
    },
    revoke(kind, id) {
      revocations.revoke(kind, id);
      links.forget(kind, id, meshErr("MESH_REVOKED", { kind, id }));
      tunnels.closeAgent(kind, id, meshErr("MESH_REVOKED", { kind, id }));
    },
    listen(port, host = "0.0.0.0") {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          const addr = server.address();
          resolve({ port: typeof addr === "object" && addr ? addr.port : port });
        });
      });
    },
    async close() {
      links.close();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Streams never end on their own; drop the sessions so close() does not wait for agents.
      for (const s of sessions) s.destroy();
      for (const c of sockets) c.destroy();
      await closed;
    },
  };
}
