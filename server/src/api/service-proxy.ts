// The in-server service proxy over HTTP: any method on `/proxy/services/<project>/<run>/<path>`
// goes to a running replica of the service through a mesh tunnel (one per request), as dstack's
// server proxies services that no gateway serves. Who may call and which replica answers is
// services/service-proxy.ts; this file only moves the HTTP message.
import http, { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import type { Duplex, Readable } from "node:stream";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { isDstackError, type ConnectCodeName } from "../errors.js";
import type { Services } from "../services/index.js";

export const SERVICE_PROXY_PREFIX = "/proxy/services";

/** Headers that belong to one connection, not to the message (RFC 9110 §7.6.1), and HTTP/2's own. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings", "host"]);

const HTTP_STATUS: Partial<Record<ConnectCodeName, number>> = { Unauthenticated: 401, PermissionDenied: 403, NotFound: 404, Unavailable: 503, InvalidArgument: 400, FailedPrecondition: 409 };

function messageHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const named = String(headers.connection ?? "").split(",").map((h) => h.trim().toLowerCase()).filter(Boolean);
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !k.startsWith(":") && !HOP_BY_HOP.has(k) && !named.includes(k)) out[k] = v;
  return out;
}

/** The service's prefix and the rest of the URL (path and query) after it. */
function splitUrl(url: string, project: string, run: string): { prefix: string; rest: string } {
  const prefix = `${SERVICE_PROXY_PREFIX}/${encodeURIComponent(project)}/${encodeURIComponent(run)}`;
  const rest = url.startsWith(prefix) ? url.slice(prefix.length) : url.slice(url.indexOf("/", SERVICE_PROXY_PREFIX.length + 1 + project.length + 1));
  return { prefix, rest: rest || "/" };
}

/** The HTTP status a proxy error answers with. */
function statusOf(e: unknown): { status: number; detail: string } {
  if (isDstackError(e)) return { status: HTTP_STATUS[e.status] ?? 502, detail: e.message };
  return { status: 502, detail: e instanceof Error ? e.message : String(e) };
}

function fail(reply: FastifyReply, status: number, detail: string): void {
  if (reply.raw.headersSent) return void reply.raw.destroy();
  reply.raw.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ detail }));
}

/** What the service is told about the request, beside its own headers. */
function forwardedHeaders(headers: OutgoingHttpHeaders, req: IncomingMessage, target: { authChecked: boolean; stripPrefix: boolean }, prefix: string, protocol: string): OutgoingHttpHeaders {
  // The dstack token opened the proxy; the service never sees it (with `auth: false` it is the caller's own header).
  if (target.authChecked) delete headers.authorization;
  const host = String(req.headers[":authority"] ?? req.headers.host ?? "");
  return {
    ...headers,
    host,
    "x-forwarded-host": host,
    "x-forwarded-proto": protocol,
    "x-forwarded-for": [req.headers["x-forwarded-for"], req.socket.remoteAddress].filter(Boolean).join(", "),
    ...(target.stripPrefix ? { "x-forwarded-prefix": prefix } : {}),
  };
}

const UPGRADE_PATH = /^\/proxy\/services\/([^/?#]+)\/([^/?#]+)(\/[^#]*)?$/;

/**
 * Upgrades (WebSocket and the like) to a service: the request head goes down the replica's tunnel
 * as it came, then bytes flow both ways untouched. dstack's in-server proxy has no WebSockets.
 * Other upgrade requests (`Upgrade: h2c` from curl) are served as plain requests by `handler`.
 */
export function registerServiceProxyUpgrades(server: http.Server, services: Services, handler: (req: IncomingMessage, res: http.ServerResponse) => void): void {
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const m = UPGRADE_PATH.exec(req.url ?? "");
    if (!m) {
      // Not ours: answer it as HTTP/1.1 without the upgrade (what Node does when nobody listens).
      if (head.length) socket.unshift(head);
      const res = new http.ServerResponse(req);
      res.shouldKeepAlive = false;
      res.assignSocket(socket as Socket);
      res.once("finish", () => socket.end());
      return handler(req, res);
    }
    void upgrade(req, socket, head, services, decodeURIComponent(m[1]!), decodeURIComponent(m[2]!), m[3] ?? "/");
  });
}

async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, services: Services, project: string, run: string, rest: string): Promise<void> {
  socket.on("error", () => socket.destroy());
  let target: Awaited<ReturnType<Services["serviceProxy"]["open"]>>;
  try {
    target = await services.serviceProxy.open(project, run, req.headers.authorization);
  } catch (e) {
    const { status, detail } = statusOf(e);
    const body = JSON.stringify({ detail });
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    return;
  }
  const tunnel = target.tunnel.tunnel;
  const prefix = `${SERVICE_PROXY_PREFIX}/${encodeURIComponent(project)}/${encodeURIComponent(run)}`;
  // Hop-by-hop headers are the upgrade itself here: Connection and Upgrade go through.
  const own = messageHeaders(req.headers);
  const headers = forwardedHeaders({ ...own, connection: req.headers.connection, upgrade: req.headers.upgrade }, req, target, prefix, "http");
  const lines = [`${req.method} ${target.stripPrefix ? rest : req.url} HTTP/1.1`];
  for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v]) if (one !== undefined) lines.push(`${k}: ${one}`);
  tunnel.write(`${lines.join("\r\n")}\r\n\r\n`);
  if (head.length) tunnel.write(head);
  tunnel.on("error", () => socket.destroy());
  socket.on("close", () => tunnel.destroy());
  tunnel.on("close", () => socket.destroy());
  socket.pipe(tunnel).pipe(socket);
}

export function registerServiceProxy(app: FastifyInstance, services: Services): void {
  void app.register(async (scope) => {
    // The body is the upstream's business: leave the request stream unread for piping.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser("*", (_req, payload, done) => done(null, payload));

    // `/proxy/services/p/r` → `/proxy/services/p/r/` (relative links in the service's pages resolve under it).
    scope.all<{ Params: { project: string; run: string } }>(`${SERVICE_PROXY_PREFIX}/:project/:run`, async (req, reply) => {
      const q = req.url.indexOf("?");
      return reply.redirect(q < 0 ? `${req.url}/` : `${req.url.slice(0, q)}/${req.url.slice(q)}`, 308);
    });

    scope.all<{ Params: { project: string; run: string } }>(`${SERVICE_PROXY_PREFIX}/:project/:run/*`, (req, reply) => proxy(req, reply, services));
  });
}

async function proxy(req: FastifyRequest<{ Params: { project: string; run: string } }>, reply: FastifyReply, services: Services): Promise<void> {
  const { project, run } = req.params;
  const gone = new AbortController();
  const onClose = () => !reply.raw.writableFinished && gone.abort();
  reply.raw.once("close", onClose);
  reply.hijack();
  let target: Awaited<ReturnType<Services["serviceProxy"]["open"]>>;
  try {
    target = await services.serviceProxy.open(project, run, req.headers.authorization, gone.signal);
  } catch (e) {
    const { status, detail } = statusOf(e);
    return fail(reply, status, detail);
  }
  const { prefix, rest } = splitUrl(req.url, project, run);
  const headers = forwardedHeaders(messageHeaders(req.headers), req.raw, target, prefix, req.protocol);
  const tunnel = target.tunnel.tunnel;
  const upstream = http.request({ createConnection: () => tunnel as unknown as Socket, method: req.method, path: target.stripPrefix ? rest : req.url, headers });
  gone.signal.addEventListener("abort", () => (upstream.destroy(), tunnel.destroy()), { once: true });
  upstream.on("error", (e) => fail(reply, 502, `Service '${run}' did not answer: ${e.message}`));
  upstream.on("response", (res) => {
    reply.raw.writeHead(res.statusCode ?? 502, res.statusMessage ?? "", messageHeaders(res.headers));
    res.pipe(reply.raw);
    res.once("end", () => tunnel.end());
  });
  const body = req.body as Readable | undefined;
  if (body && typeof body.pipe === "function") body.pipe(upstream);
  else upstream.end();
}
