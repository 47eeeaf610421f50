// TunnelService → services.tunnels. The first request names the job; the service authorizes and
// opens the mesh tunnel; then the client's frames and the tunnel are spliced, with backpressure
// both ways (frames are pulled only as fast as the other side takes bytes).
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { OpenRunTunnelResponseSchema, RunTunnelTarget, type OpenRunTunnelRequest, type OpenRunTunnelResponse, type TunnelService } from "@dstack/proto/api";
import { spliceStreams, TunnelDuplex, type TunnelFrame } from "@dstack/proto/link";
import { caller } from "./context.js";
import type { HandlerDeps } from "./deps.js";
import { invalidArgument, requireText } from "./validate.js";

/** The client's frames after `open`. */
async function* clientFrames(it: AsyncIterator<OpenRunTunnelRequest>): AsyncGenerator<TunnelFrame> {
  for (;;) {
    const r = await it.next();
    if (r.done) return;
    const f = r.value.frame;
    if (f.case === "data") yield { case: "data", value: f.value };
    else if (f.case === "halfClose") yield { case: "halfClose" };
    else if (f.case === "open") throw invalidArgument("open", "may only be sent in the first message");
  }
}

export function tunnelHandlers({ services }: HandlerDeps): Partial<ServiceImpl<typeof TunnelService>> {
  return {
    async *openRunTunnel(requests, ctx): AsyncGenerator<OpenRunTunnelResponse> {
      const it = requests[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done) return;
      if (first.value.frame.case !== "open") throw invalidArgument("open", "the first message must be `open`, naming the run");
      const o = first.value.frame.value;
      requireText("open.project_name", o.projectName);
      requireText("open.run_name", o.runName);
      const target = o.target === RunTunnelTarget.PORT ? "port" : "ssh";
      if (target === "port" && (o.port < 1 || o.port > 65535)) throw invalidArgument("open.port", `must be 1-65535 for RUN_TUNNEL_TARGET_PORT (got ${o.port})`);
      const opened = await services.tunnels.open(caller(ctx), { projectName: o.projectName, runName: o.runName, replicaNum: o.replicaNum, jobNum: o.jobNum, target, port: o.port, signal: ctx.signal });
      const client = new TunnelDuplex().attach(clientFrames(it));
      spliceStreams(client, opened.tunnel);
      const onAbort = (): void => void client.destroy(new Error("the client cancelled the tunnel"));
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      try {
        yield create(OpenRunTunnelResponseSchema, { frame: { case: "opened", value: { jobSubmissionId: opened.jobSubmissionId, instanceName: opened.instanceName } } });
        for await (const f of client.outgoing()) {
          if (f.case === "error") throw new ConnectError(`Tunnel to run '${opened.runName}' on instance '${opened.instanceName}' failed: ${f.message}`, Code.Unavailable);
          yield create(OpenRunTunnelResponseSchema, { frame: f.case === "data" ? f : { case: "halfClose", value: {} } });
        }
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        if (!client.destroyed) client.destroy();
      }
    },
  };
}
