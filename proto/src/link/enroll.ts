// Enrollment from the agent's side: trust the server only through the pinned CA fingerprint,
// send a CSR with a key generated here (it never leaves the agent), keep what comes back.
import { X509Certificate } from "node:crypto";
import { connect as tlsConnect, type DetailedPeerCertificate } from "node:tls";
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AgentIdentitySchema, AgentKind, EnrollmentService, type AgentIdentity } from "../agent.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { IdentityStore, type StoredIdentity } from "./identity.js";
import type { AgentKindName } from "./protocol.js";
import { certificateFingerprint, createCsr, generateKey, normalizeFingerprint } from "./x509.js";

export interface EnrollOptions {
  /** The agent port, e.g. `https://dstack.example.com:3001`. */
  serverUrl: string;
  token: string;
  /** The server CA's SHA-256 fingerprint (`--ca-sha256`), hex with or without colons. */
  caSha256: string;
  kind: AgentKindName;
  identity?: MessageInitShape<typeof AgentIdentitySchema>;
  /** Where to keep key, certificate and CA. */
  home: string;
  /** TLS server name, when `serverUrl` names an address the server certificate does not list. */
  servername?: string;
  timeoutMs?: number;
}

export class EnrollError extends Error {
  override name = "EnrollError";
}

/**
 * Connects without trusting anything, finds the CA whose fingerprint matches the pin in the
 * chain the server presents, and checks that it signed the server's certificate. Returns the CA.
 */
export async function fetchPinnedCa(serverUrl: string, caSha256: string, servername?: string, timeoutMs = 10_000): Promise<string> {
  const url = new URL(serverUrl);
  const want = normalizeFingerprint(caSha256);
  const chain = await new Promise<DetailedPeerCertificate>((resolve, reject) => {
    const sock = tlsConnect({
      host: url.hostname.replace(/^\[|\]$/g, ""),
      port: Number(url.port || 443),
      servername: servername ?? (/^[\d.]+$|:/.test(url.hostname) ? undefined : url.hostname),
      rejectUnauthorized: false, // trust comes from the pin below, not from a system store
      ALPNProtocols: ["h2"],
      timeout: timeoutMs,
    });
    sock.once("secureConnect", () => {
      const c = sock.getPeerCertificate(true);
      sock.destroy();
      resolve(c);
    });
    sock.once("timeout", () => (sock.destroy(), reject(new EnrollError(`no TLS answer from ${url.host} within ${timeoutMs} ms`))));
    sock.once("error", (e) => reject(new EnrollError(`cannot reach ${url.host}: ${e.message}`)));
  });
  const seen: string[] = [];
  const leaf = new X509Certificate(chain.raw);
  for (let c: DetailedPeerCertificate | undefined = chain, i = 0; c && i < 8; c = c.issuerCertificate === c ? undefined : c.issuerCertificate, i++) {
    const x = new X509Certificate(c.raw);
    const fp = certificateFingerprint(x.toString());
    seen.push(fp);
    if (fp === want) {
      if (!x.ca) throw new EnrollError("the pinned certificate is not a CA");
      if (!leaf.verify(x.publicKey)) throw new EnrollError("the server certificate is not signed by the pinned CA");
      return x.toString();
    }
  }
  throw new EnrollError(
    `server CA fingerprint mismatch: expected ${want}, the server at ${url.host} presented ${seen.join(", ") || "no certificates"}. ` +
      "Check --ca-sha256 (`dstack server` prints it) — or someone is intercepting the connection.",
  );
}

/**
 * HTTP/2 flow-control windows on the agent port, both ends. Node keeps the spec's 64 KiB for the
 * connection unless told otherwise, which caps everything an agent sends or receives at 64 KiB per
 * round trip (≈1.3 MB/s at 50 ms): tunnels (scp over `ssh <run>`) and logs need more. The stream
 * window also bounds what one stalled stream can leave buffered at the receiver.
 */
export const AGENT_PORT_WINDOWS = { streamBytes: 1 << 20, connectionBytes: 8 << 20 } as const;

/**
 * An Http2SessionManager that opens the connection-level window of each session it makes to
 * AGENT_PORT_WINDOWS.connectionBytes (Node has no option for it). Pass
 * `settings: { initialWindowSize }` in its session options for the stream window.
 */
export class WideWindowSessionManager extends Http2SessionManager {
  private readonly widened = new WeakSet<object>();
  override async request(...args: Parameters<Http2SessionManager["request"]>): ReturnType<Http2SessionManager["request"]> {
    const stream = await super.request(...args);
    const s = stream.session;
    if (s && !this.widened.has(s)) {
      this.widened.add(s);
      s.setLocalWindowSize(AGENT_PORT_WINDOWS.connectionBytes);
      // connect-node removes its own "error" listener when the session leaves its open state, but a
      // keepalive PING still in flight then may destroy the session with "PING timed out" (a server
      // stalled past pingTimeoutMs, e.g. in a long shutdown): with no listener left that error is
      // uncaught and kills the agent (it ended every agent process of a 10,000-agent bench run).
      // The session is gone either way and the link loop redials; this listener only keeps the
      // process alive.
      s.on("error", () => {});
    }
    return stream;
  }
}

/** A gRPC transport on its own HTTP/2 session, so the caller decides when the connection ends. */
export function agentTransport(serverUrl: string, tls: { caPem: string; certPem?: string; keyPem?: string; servername?: string }): { transport: Transport; session: Http2SessionManager } {
  const session = new WideWindowSessionManager(
    serverUrl,
    // HTTP/2 PING proves the socket alive (30 s, 15 s timeout: anchors §3.2); app heartbeats prove the agent.
    // Not on idle sessions: connect-node re-arms the idle ping when the last stream closes after
    // abort(), and that ping on the destroyed session throws uncaught 30 s after every link close.
    { pingIntervalMs: 30_000, pingTimeoutMs: 15_000, pingIdleConnection: false },
    { ca: tls.caPem, cert: tls.certPem, key: tls.keyPem, servername: tls.servername, settings: { initialWindowSize: AGENT_PORT_WINDOWS.streamBytes } },
  );
  return { transport: createGrpcTransport({ baseUrl: serverUrl, sessionManager: session }), session };
}

/** Enrolls with a join token and stores the identity in `home`. */
export async function enroll(o: EnrollOptions): Promise<StoredIdentity> {
  const caPem = await fetchPinnedCa(o.serverUrl, o.caSha256, o.servername, o.timeoutMs);
  const key = generateKey();
  const { transport, session } = agentTransport(o.serverUrl, { caPem, servername: o.servername });
  try {
    const client = createClient(EnrollmentService, transport);
    const res = await client.enroll(
      {
        joinToken: o.token,
        csrPem: createCsr(key.privateKeyPem),
        kind: o.kind === "shim" ? AgentKind.SHIM : AgentKind.RUNNER,
        identity: create(AgentIdentitySchema, o.identity ?? {}) as AgentIdentity,
      },
      { timeoutMs: o.timeoutMs ?? 30_000 },
    );
    if (certificateFingerprint(res.caCertificatePem) !== normalizeFingerprint(o.caSha256)) {
      throw new EnrollError("the server answered with a CA that does not match --ca-sha256");
    }
    const certPem = res.certificateChainPem[0];
    if (!certPem) throw new EnrollError("the server sent no certificate");
    const identity: StoredIdentity = {
      kind: o.kind,
      agentId: res.agentId,
      serverUrl: o.serverUrl,
      servername: o.servername,
      caSha256: normalizeFingerprint(o.caSha256),
      notAfter: res.notAfter ? timestampDate(res.notAfter).toISOString() : new X509Certificate(certPem).validTo,
      renewAfter: res.renewAfter ? timestampDate(res.renewAfter).toISOString() : new Date().toISOString(),
      keyPem: key.privateKeyPem,
      certPem,
      caPem,
    };
    new IdentityStore(o.home).save(identity);
    return identity;
  } finally {
    session.abort();
  }
}

/** Renews the stored certificate over mutual TLS with the current one (the key is kept). */
export async function renewCertificate(home: string, timeoutMs = 30_000): Promise<StoredIdentity> {
  const store = new IdentityStore(home);
  const cur = store.load();
  const { transport, session } = agentTransport(cur.serverUrl, { caPem: cur.caPem, certPem: cur.certPem, keyPem: cur.keyPem, servername: cur.servername });
  try {
    const res = await createClient(EnrollmentService, transport).renewCertificate({ csrPem: createCsr(cur.keyPem) }, { timeoutMs });
    const certPem = res.certificateChainPem[0];
    if (!certPem) throw new EnrollError("the server sent no certificate");
    if (certificateFingerprint(res.caCertificatePem) !== cur.caSha256) throw new EnrollError("the server answered with a CA that does not match the pinned one");
    const next: StoredIdentity = {
      ...cur,
      certPem,
      notAfter: res.notAfter ? timestampDate(res.notAfter).toISOString() : cur.notAfter,
      renewAfter: res.renewAfter ? timestampDate(res.renewAfter).toISOString() : cur.renewAfter,
    };
    store.save(next);
    return next;
  } finally {
    session.abort();
  }
}
