// A stock @grpc/grpc-js client, loaded from the .proto files with @grpc/proto-loader, enrolls and
// holds a link: the agent port speaks plain gRPC, so an agent in any language can join.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";
import { create } from "@bufbuild/protobuf";
import { PingCommandSchema } from "@dstack/proto/agent";
import { createCsr, generateKey } from "@dstack/proto/link";
import { startMesh, type MeshFixture } from "./harness.js";

const PROTO_DIR = join(import.meta.dirname, "../../proto");

type Ctor = new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & Record<string, (...a: unknown[]) => unknown>;

describe("mesh: stock grpc-js client", () => {
  let f: MeshFixture;
  beforeAll(async () => {
    f = await startMesh();
  });
  afterAll(async () => f?.cleanup());

  it("enrolls with a CSR and answers a reverse call over ShimLinkService.Connect", async () => {
    const def = loader.loadSync(["dstack/agent/v1/enrollment.proto", "dstack/agent/v1/shim_link.proto"], { includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { dstack: { agent: { v1: Record<string, Ctor> } } };
    const v1 = pkg.dstack.agent.v1;
    const address = `localhost:${f.port}`;
    const key = generateKey();
    const enrollClient = new v1.EnrollmentService!(address, grpc.credentials.createSsl(Buffer.from(f.mesh.ca.certPem)));
    const res = await new Promise<{ agent_id: string; certificate_chain_pem: string[] }>((resolve, reject) =>
      enrollClient.Enroll!({ join_token: "", csr_pem: createCsr(key.privateKeyPem), kind: "AGENT_KIND_SHIM" }, (e: Error | null, r: never) => (e ? reject(e) : resolve(r))),
    ).catch((e: grpc.ServiceError) => e);
    // An empty token is refused with a status a gRPC client understands…
    expect((res as grpc.ServiceError).code).toBe(grpc.status.UNAUTHENTICATED);
    const token = await f.shimToken();
    const ok = await new Promise<{ agent_id: string; certificate_chain_pem: string[] }>((resolve, reject) =>
      enrollClient.Enroll!({ join_token: token, csr_pem: createCsr(key.privateKeyPem), kind: "AGENT_KIND_SHIM", identity: { hostname: "grpc-js" } }, (e: Error | null, r: never) => (e ? reject(e) : resolve(r))),
    );
    enrollClient.close();
    expect(ok.agent_id).toMatch(/^[0-9a-f-]{36}$/);
    // …and the certificate opens the link.
    const creds = grpc.credentials.createSsl(Buffer.from(f.mesh.ca.certPem), Buffer.from(key.privateKeyPem), Buffer.from(ok.certificate_chain_pem[0]!));
    const linkClient = new v1.ShimLinkService!(address, creds);
    const stream = linkClient.Connect!() as grpc.ClientDuplexStream<Record<string, unknown>, Record<string, unknown>>;
    const messages: Record<string, unknown>[] = [];
    stream.on("error", () => {}); // the end of the test drops the connection
    stream.on("data", (m: Record<string, unknown>) => {
      messages.push(m);
      const cmd = m.command as { request_id: string; ping?: unknown } | undefined;
      if (cmd?.ping) stream.write({ reply: { request_id: cmd.request_id, ping: { agent_time: { seconds: 1, nanos: 0 } } } });
    });
    stream.write({ event: { state_report: { agent_version: "grpc-js", tasks: [] } } });
    const link = f.mesh.links.shim(ok.agent_id);
    const result = await link.call({ case: "ping", value: create(PingCommandSchema) });
    expect(Number(result.agentTime?.seconds)).toBe(1);
    expect(messages[0]?.message).toBe("accepted");
    stream.end();
    linkClient.close();
  });
});
