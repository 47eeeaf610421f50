// The caller's identity, read from the TLS session — never from a header, which a client could forge.
import type { TLSSocket } from "node:tls";
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { parseIdentityUri, type AgentKindName } from "@dstack/proto/link";
import { meshErr } from "./errors.js";

export interface Peer {
  kind: AgentKindName;
  id: string;
  serial: string;
  notAfter: Date;
  remoteAddress: string | undefined;
}

/** What the TLS layer said: a verified agent, no certificate, or a certificate it refused (and why). */
export type PeerResult = { ok: true; peer: Peer } | { ok: false; reason: "none" | string; remoteAddress: string | undefined };

export const kPeer = createContextKey<PeerResult>({ ok: false, reason: "none", remoteAddress: undefined }, { description: "mesh peer" });

// A TLS session serves many calls; parse its certificate once.
const cache = new WeakMap<object, PeerResult>();

export function peerFromSocket(socket: TLSSocket): PeerResult {
  const hit = cache.get(socket);
  if (hit) return hit;
  const remoteAddress = socket.remoteAddress;
  let result: PeerResult;
  // getPeerX509Certificate parses the DER once; getPeerCertificate() would build a JS object of
  // every field and a second parse would be needed for the SAN (0.5 ms per link set-up, profiled).
  const x = socket.getPeerX509Certificate?.();
  if (!x) result = { ok: false, reason: "none", remoteAddress };
  else if (!socket.authorized) result = { ok: false, reason: String(socket.authorizationError ?? "not trusted"), remoteAddress };
  else {
    const uri = (x.subjectAltName ?? "").split(", ").find((s) => s.startsWith("URI:"))?.slice(4);
    const id = uri ? parseIdentityUri(uri) : null;
    result = id
      ? { ok: true, peer: { ...id, serial: x.serialNumber, notAfter: new Date(x.validTo), remoteAddress } }
      : { ok: false, reason: "the certificate names no dstack agent", remoteAddress };
  }
  cache.set(socket, result);
  return result;
}

/** The verified peer of a call; throws Unauthenticated with the TLS layer's reason otherwise. */
export function requirePeer(ctx: HandlerContext): Peer {
  const r = ctx.values.get(kPeer);
  if (r.ok) return r.peer;
  if (r.reason === "none") throw meshErr("MESH_NO_CLIENT_CERT");
  throw meshErr("MESH_BAD_CLIENT_CERT", { reason: r.reason });
}
