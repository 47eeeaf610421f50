// The in-server service proxy over HTTP: any method on `/proxy/services/<project>/<run>/<path>`
// goes to a running replica of the service through a mesh tunnel (one per request), as dstack's
// server proxies services that no gateway serves. Who may call and which replica answers is
// services/service-proxy.ts; this file only moves the HTTP message.
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import type { Readable } from "node:stream";
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

function fail(reply: FastifyReply, status: number, detail: string): void {
  if (reply.raw.headersSent) return void reply.raw.destroy();
  reply.raw.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ detail }));
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
    if (isDstackError(e)) return fail(reply, HTTP_STATUS[e.status] ?? 502, e.message);
    return fail(reply, 502, e instanceof Error ? e.message : String(e));
  }
  const { prefix, rest } = splitUrl(req.url, project, run);
  const headers = messageHeaders(req.headers);
  // The dstack token opened the proxy; the service never sees it (with `auth: false` it is the caller's own header).
  if (target.authChecked) delete headers.authorization;
  const host = req.headers[":authority"] ?? req.headers.host ?? "";
  Object.assign(headers, {
    host: String(host),
    "x-forwarded-host": String(host),
    "x-forwarded-proto": req.protocol,
    "x-forwarded-for": [req.headers["x-forwarded-for"], req.socket.remoteAddress].filter(Boolean).join(", "),
    ...(target.stripPrefix ? { "x-forwarded-prefix": prefix } : {}),
  });
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
