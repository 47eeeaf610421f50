// The agent-port handlers: enrollment, and the shim and runner control links. Thin on purpose:
// identity comes from the TLS peer (peer.ts), links and calls live in links.ts.
import type { KeyObject } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import {
  AgentKind,
  CodeService,
  EnrollmentService,
  LogService,
  EnrollResponseSchema,
  RenewCertificateResponseSchema,
  RunnerLinkService,
  ShimLinkService,
  type AgentIdentity,
  type RunnerEvent,
  type RunnerLinkServiceConnectRequest,
  type ShimEvent,
  type ShimLinkServiceConnectRequest,
} from "@dstack/proto/agent";
import { identityUri, parseCsr, type AgentKindName } from "@dstack/proto/link";
import type { Message } from "@bufbuild/protobuf";
import type { CertificateAuthority } from "./ca.js";
import { codeService } from "./code.js";
import type { MeshDataHooks } from "./data-hooks.js";
import { meshErr } from "./errors.js";
import type { ConsumedJoinToken, JoinTokens } from "./join-tokens.js";
import type { AgentLink, Links, LinkSession } from "./links.js";
import { logService } from "./logs.js";
import { requirePeer, type Peer } from "./peer.js";
import type { Revocations } from "./revocations.js";

export interface MeshPolicy {
  /** Client certificate lifetime; default 24 h. Agents renew at two thirds of it. */
  certificateLifetimeMs: number;
  /** The instance id a shim enrolling with `token` becomes (may create the instance). */
  resolveShim(token: ConsumedJoinToken, identity: AgentIdentity | undefined): Promise<string>;
  /** Whether task `taskId` runs on instance `instanceId` (a shim may only report its own tasks). */
  ownsTask(instanceId: string, taskId: string): Promise<boolean>;
}

export interface MeshDeps {
  ca: CertificateAuthority;
  joinTokens: JoinTokens;
  links: Links;
  revocations: Revocations;
  policy: MeshPolicy;
  /** Logs and code blobs (the data plane); without them LogService and CodeService answer UNIMPLEMENTED. */
  data?: MeshDataHooks;
}

const kindName = (k: AgentKind): AgentKindName | null => (k === AgentKind.SHIM ? "shim" : k === AgentKind.RUNNER ? "runner" : null);

function issue(deps: MeshDeps, kind: AgentKindName, id: string, csrPem: string) {
  return issueForKey(deps, kind, id, parseCsrOrThrow(csrPem));
}

/** The client certificate of agent `kind`/`id` for `subjectKey`, exactly as Enroll issues it. */
export function issueForKey(deps: Pick<MeshDeps, "ca" | "policy">, kind: AgentKindName, id: string, subjectKey: KeyObject) {
  const lifetime = deps.policy.certificateLifetimeMs;
  const { certPem, notAfter } = deps.ca.issue({
    commonName: id,
    organizationalUnit: kind,
    subjectKey,
    lifetimeMs: lifetime,
    usage: ["client"],
    uris: [identityUri(kind, id)],
  });
  const renewAfter = new Date(notAfter.getTime() - lifetime / 3);
  return { certPem, notAfter, renewAfter };
}

function requireLive(deps: MeshDeps, peer: Peer, kind: AgentKindName, service: string): void {
  if (peer.kind !== kind) throw meshErr("MESH_WRONG_SERVICE", { kind: peer.kind, service });
  if (deps.revocations.isRevoked(peer.kind, peer.id)) throw meshErr("MESH_REVOKED", { kind: peer.kind, id: peer.id });
}

/** Checks that every task or job an event names belongs to the sending agent. */
async function checkOwnership(deps: MeshDeps, peer: Peer, event: ShimEvent["event"] | RunnerEvent["event"]): Promise<void> {
  const spoofed = (what: string) => meshErr("MESH_SPOOFED", { kind: peer.kind, id: peer.id, what });
  if (peer.kind === "shim") {
    const e = event as ShimEvent["event"];
    const taskIds = e.case === "stateReport" ? e.value.tasks.map((t) => t.taskId) : e.case === "taskStateChanged" ? [e.value.task?.taskId ?? ""] : [];
    for (const t of taskIds) if (!(await deps.policy.ownsTask(peer.id, t))) throw spoofed(`task ${t}`);
  } else {
    const e = event as RunnerEvent["event"];
    const jobIds =
      e.case === "stateReport"
        ? [e.value.jobSubmissionId, ...e.value.jobStates.map((s) => s.jobSubmissionId)]
        : e.case === "jobStateChanged"
          ? [e.value.jobSubmissionId]
          : [];
    for (const j of jobIds) if (j !== peer.id) throw spoofed(`job ${j}`);
  }
}

type Request = ShimLinkServiceConnectRequest | RunnerLinkServiceConnectRequest;

/**
 * One agent stream: first the state report, then replies, events and heartbeats until it ends.
 *
 * A hand-written iterator rather than an async generator that would `yield*` the session's queue:
 * each layer of async generator costs a few promises per message that live until the next one
 * (seconds on a heartbeat-only link), so they survive young-generation GCs and are promoted; at
 * thousands of links that garbage is a large part of the server's CPU (test/bench/mesh.bench.ts).
 * The queue ends only in `Links.detach`, so a stream that runs out is already detached; the
 * server stopping the stream early (`return`/`throw`) detaches here.
 */
function serveLink(deps: MeshDeps, kind: AgentKindName, requests: AsyncIterable<Request>, ctx: HandlerContext): AsyncIterable<Message> {
  return {
    [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
      let out: AsyncIterator<Message> | null = null;
      let opening: Promise<AsyncIterator<Message> | null> | null = null;
      let stop: (() => void) | null = null;
      let stopped = false;
      const open = async (): Promise<AsyncIterator<Message> | null> => {
        const peer = requirePeer(ctx);
        requireLive(deps, peer, kind, kind === "shim" ? "ShimLinkService" : "RunnerLinkService");
        const it = requests[Symbol.asyncIterator]();
        const first = await it.next();
        if (first.done || stopped) return null;
        const m = first.value.message;
        if (m.case !== "event" || m.value.event.case !== "stateReport") {
          throw meshErr("MESH_PROTOCOL", { reason: "the first message of a link must be a state report event" });
        }
        await checkOwnership(deps, peer, m.value.event);
        if (stopped) return null;
        const { link, session } = deps.links.open(kind, peer.id, m.value.event.value as never, peer.remoteAddress);
        stop = () => deps.links.detach(link, session, "closed");
        deps.links.emit("event", link, m.value.event as never);
        void readLink(deps, peer, link, session, it);
        ctx.signal.addEventListener("abort", stop, { once: true });
        return (out = session.out[Symbol.asyncIterator]());
      };
      const end = (): void => {
        stopped = true;
        stop?.();
      };
      // Iterable itself, and with throw(), as a generator is: connect's pipelines rely on both.
      const iterator: AsyncIterableIterator<Message> = {
        [Symbol.asyncIterator]: () => iterator,
        next: () => (out ? out.next() : (opening ??= open()).then((o) => (o ? o.next() : { value: undefined, done: true }))),
        return: (value?: unknown) => (end(), Promise.resolve({ value: value as Message, done: true })),
        throw: (e?: unknown) => (end(), Promise.reject(e)),
      };
      return iterator;
    },
  };
}

async function readLink(deps: MeshDeps, peer: Peer, link: AgentLink, session: LinkSession, it: AsyncIterator<Request>): Promise<void> {
  try {
    for (;;) {
      const r = await it.next();
      if (r.done || session.out.closed) break;
      deps.links.seen(link);
      const m = r.value.message;
      if (m.case === "reply") link.settle(m.value.requestId, m.value.result as never);
      else if (m.case === "event") {
        await checkOwnership(deps, peer, m.value.event);
        if (m.value.event.case === "stateReport") link.stateReport = m.value.event.value as never;
        deps.links.emit("event", link, m.value.event as never);
      }
    }
    deps.links.detach(link, session, "closed");
  } catch (e) {
    if (e instanceof Error && "meshCode" in e) deps.links.emit("violation", link, e);
    deps.links.detach(link, session, "error", e);
  }
}

export function meshRoutes(deps: MeshDeps) {
  return (router: ConnectRouter): void => {
    router.service(EnrollmentService, {
      async enroll(req) {
        const kind = kindName(req.kind);
        if (!kind) throw meshErr("MESH_PROTOCOL", { reason: "kind must be AGENT_KIND_SHIM or AGENT_KIND_RUNNER" });
        const subjectKey = parseCsrOrThrow(req.csrPem); // refuse a bad CSR before spending the token
        const token = await deps.joinTokens.consume(req.joinToken, kind);
        let id: string;
        if (kind === "runner") {
          if (!token.boundId) throw meshErr("MESH_PROTOCOL", { reason: "this runner token is not bound to a job submission" });
          const claimed = req.identity?.jobSubmissionId;
          if (claimed && claimed !== token.boundId) throw meshErr("MESH_SPOOFED", { kind, id: claimed, what: `job ${claimed}` });
          id = token.boundId;
        } else id = await deps.policy.resolveShim(token, req.identity);
        if (deps.revocations.isRevoked(kind, id)) throw meshErr("MESH_REVOKED", { kind, id });
        const { certPem, notAfter, renewAfter } = issueForKey(deps, kind, id, subjectKey);
        return create(EnrollResponseSchema, {
          agentId: id,
          certificateChainPem: [certPem],
          caCertificatePem: deps.ca.certPem,
          notAfter: timestampFromDate(notAfter),
          renewAfter: timestampFromDate(renewAfter),
        });
      },
      async renewCertificate(req, ctx) {
        const peer = requirePeer(ctx);
        if (deps.revocations.isRevoked(peer.kind, peer.id)) throw meshErr("MESH_REVOKED", { kind: peer.kind, id: peer.id });
        const { certPem, notAfter, renewAfter } = issue(deps, peer.kind, peer.id, req.csrPem);
        return create(RenewCertificateResponseSchema, {
          certificateChainPem: [certPem],
          caCertificatePem: deps.ca.certPem,
          notAfter: timestampFromDate(notAfter),
          renewAfter: timestampFromDate(renewAfter),
        });
      },
    });
    router.service(ShimLinkService, { connect: (reqs, ctx) => serveLink(deps, "shim", reqs, ctx) as never });
    router.service(RunnerLinkService, { connect: (reqs, ctx) => serveLink(deps, "runner", reqs, ctx) as never });
    router.service(LogService, logService(deps));
    router.service(CodeService, codeService(deps));
  };
}

/** The CSR's public key (its signature checked), or MESH_BAD_CSR. */
function parseCsrOrThrow(csrPem: string): KeyObject {
  try {
    return parseCsr(csrPem);
  } catch (e) {
    throw meshErr("MESH_BAD_CSR", { reason: e instanceof Error ? e.message : String(e) });
  }
}
