// The public API against a real server process, on SQLite and on PostgreSQL: a client made from
// the generated code over gRPC (h2c), and the real curl binary speaking Connect-JSON.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { connect as tlsConnect, type DetailedPeerCertificate } from "node:tls";
import { promisify } from "node:util";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { GlobalRole, ProjectRole, ProjectService, SecretService, ServerService, UserService } from "@dstack/proto/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIALECTS, startTestServer, type TestServer } from "../helpers/server.js";

const run = promisify(execFile);

/** POSTs Connect-JSON with the real curl binary; returns the HTTP status and the parsed body. */
async function curl(url: string, rpc: string, body: unknown, token?: string): Promise<{ status: number; body: Record<string, any> }> {
  const args = ["-s", "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "-d", JSON.stringify(body), `${url}/dstack.api.v1.${rpc}`];
  if (token !== undefined) args.unshift("-H", `Authorization: Bearer ${token}`);
  const { stdout } = await run("curl", args);
  const cut = stdout.lastIndexOf("\n");
  return { status: Number(stdout.slice(cut + 1)), body: JSON.parse(stdout.slice(0, cut) || "{}") };
}

async function connectError(call: Promise<unknown> | (() => Promise<unknown>)): Promise<ConnectError> {
  try {
    await (typeof call === "function" ? call() : call);
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

describe.each(DIALECTS)("public API on %s", (dialect) => {
  let server: TestServer;
  let users: Client<typeof UserService>;
  let projects: Client<typeof ProjectService>;
  let secrets: Client<typeof SecretService>;
  const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
  let admin: ReturnType<typeof as>;

  beforeAll(async () => {
    server = await startTestServer(dialect);
    const transport = createGrpcTransport({ baseUrl: server.url });
    users = createClient(UserService, transport);
    projects = createClient(ProjectService, transport);
    secrets = createClient(SecretService, transport);
    admin = as(server.adminToken);
  });
  afterAll(async () => {
    expect(await server?.stop()).toBe(0);
  });

  it("serves the agent port with the CA whose fingerprint GetServerInfo publishes", async () => {
    const info = await createClient(ServerService, createGrpcTransport({ baseUrl: server.url })).getServerInfo({});
    expect(info.caFingerprintSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(server.stdout()).toContain(`CA SHA-256 ${info.caFingerprintSha256}`);
    // What an agent sees at the agent port: a chain ending in that CA, which also asks for a client certificate.
    const chain = await new Promise<DetailedPeerCertificate>((ok, fail) => {
      const socket = tlsConnect({ host: "127.0.0.1", port: server.agentPort, rejectUnauthorized: false, ALPNProtocols: ["h2"] }, () => {
        ok(socket.getPeerCertificate(true));
        socket.end();
      });
      socket.on("error", fail);
    });
    const ca = chain.issuerCertificate;
    expect(createHash("sha256").update(ca.raw).digest("hex")).toBe(info.caFingerprintSha256);
  });

  it("answers GET /healthcheck with {status: running}", async () => {
    const res = await fetch(`${server.url}/healthcheck`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "running" });
  });

  it("serves GetServerInfo without a token over gRPC, gRPC-Web and curl", async () => {
    const grpc = await createClient(ServerService, createGrpcTransport({ baseUrl: server.url })).getServerInfo({});
    const web = await createClient(ServerService, createGrpcWebTransport({ baseUrl: server.url, httpVersion: "1.1" })).getServerInfo({});
    const viaCurl = await curl(server.url, "ServerService/GetServerInfo", {});
    expect(grpc.serverVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(web.serverVersion).toBe(grpc.serverVersion);
    expect(viaCurl).toMatchObject({ status: 200, body: { serverVersion: grpc.serverVersion, apiVersion: grpc.apiVersion } });
  });

  it("rejects calls without a token or with a wrong one as Unauthenticated", async () => {
    expect((await connectError(users.getMyUser({}))).code).toBe(Code.Unauthenticated);
    expect((await connectError(users.getMyUser({}, as("not-a-token")))).code).toBe(Code.Unauthenticated);
    const none = await curl(server.url, "UserService/GetMyUser", {});
    const bad = await curl(server.url, "UserService/GetMyUser", {}, "not-a-token");
    for (const r of [none, bad]) expect(r).toMatchObject({ status: 401, body: { code: "unauthenticated" } });
  });

  it("identifies the admin by its token", async () => {
    const { user } = await users.getMyUser({}, admin);
    expect(user).toMatchObject({ username: "admin", globalRole: GlobalRole.ADMIN, active: true });
  });

  it("creates users and projects, adds members and sets secrets with the generated client", async () => {
    const created = await users.createUser({ username: `alice-${dialect}`, email: "alice@example.com" }, admin);
    expect(created.user?.user).toMatchObject({ username: `alice-${dialect}`, globalRole: GlobalRole.USER, email: "alice@example.com" });
    const aliceToken = created.user!.token;
    expect((await users.getMyUser({}, as(aliceToken))).user?.username).toBe(`alice-${dialect}`);

    const { project } = await projects.createProject({ projectName: "research" }, admin);
    expect(project).toMatchObject({ name: "research", owner: { username: "admin" } });
    const withAlice = await projects.addProjectMembers({ projectName: "research", members: [{ username: `alice-${dialect}`, projectRole: ProjectRole.MANAGER }] }, admin);
    expect(withAlice.project?.members.map((m) => [m.user?.username, m.projectRole])).toEqual([
      ["admin", ProjectRole.ADMIN],
      [`alice-${dialect}`, ProjectRole.MANAGER],
    ]);

    // A manager may manage secrets; values go in and never come back.
    const set = await secrets.createOrUpdateSecret({ projectName: "research", name: "HF_TOKEN", value: "hf_s3cr3t" }, as(aliceToken));
    expect(set.secret?.name).toBe("HF_TOKEN");
    const listed = await secrets.listSecrets({ projectName: "research" }, as(aliceToken));
    const got = await secrets.getSecret({ projectName: "research", name: "HF_TOKEN" }, admin);
    expect(listed.secrets.map((s) => s.name)).toEqual(["HF_TOKEN"]);
    for (const s of [set.secret, got.secret, ...listed.secrets]) expect(s?.value).toBeUndefined();
    expect(JSON.stringify([listed, got], (_k, v) => (typeof v === "bigint" ? String(v) : v))).not.toContain("hf_s3cr3t");
  });

  it("does the same with curl (Connect-JSON)", async () => {
    const t = server.adminToken;
    const created = await curl(server.url, "UserService/CreateUser", { username: "bob", globalRole: "GLOBAL_ROLE_USER" }, t);
    expect(created).toMatchObject({ status: 200, body: { user: { user: { username: "bob", globalRole: "GLOBAL_ROLE_USER" } } } });
    const bobToken: string = created.body.user.token;
    expect((await curl(server.url, "ProjectService/CreateProject", { projectName: "curl-proj" }, t)).status).toBe(200);
    const members = await curl(server.url, "ProjectService/SetProjectMembers", { projectName: "curl-proj", members: [{ username: "admin", projectRole: "PROJECT_ROLE_ADMIN" }, { username: "bob" }] }, t);
    expect(members.body.project.members).toEqual([
      { user: { username: "admin" }, projectRole: "PROJECT_ROLE_ADMIN" },
      { user: { username: "bob" }, projectRole: "PROJECT_ROLE_USER" },
    ]);
    expect((await curl(server.url, "SecretService/CreateOrUpdateSecret", { projectName: "curl-proj", name: "DB_PASSWORD", value: "pw-123" }, t)).status).toBe(200);
    const list = await curl(server.url, "SecretService/ListSecrets", { projectName: "curl-proj" }, t);
    expect(list.body.secrets.map((s: { name: string }) => s.name)).toEqual(["DB_PASSWORD"]);
    expect(JSON.stringify(list.body)).not.toContain("pw-123");
    // bob is a plain member: sees the project, may not read its secrets.
    expect((await curl(server.url, "ProjectService/GetProject", { projectName: "curl-proj" }, bobToken)).status).toBe(200);
    expect(await curl(server.url, "SecretService/ListSecrets", { projectName: "curl-proj" }, bobToken)).toMatchObject({ status: 403, body: { code: "permission_denied" } });
  });

  it("keeps a plain user to their own projects and out of admin calls", async () => {
    const { user } = await users.createUser({ username: "carol" }, admin);
    const carol = as(user!.token);
    await projects.createProject({ projectName: "carols" }, carol);
    await projects.createProject({ projectName: "private-ops" }, admin);

    const visible = (await projects.listProjects({}, carol)).projects.map((p) => p.name);
    expect(visible).toEqual(["carols"]);
    for (const call of [
      () => projects.getProject({ projectName: "private-ops" }, carol),
      () => projects.addProjectMembers({ projectName: "private-ops", members: [{ username: "carol" }] }, carol),
      () => secrets.listSecrets({ projectName: "private-ops" }, carol),
      () => secrets.createOrUpdateSecret({ projectName: "private-ops", name: "X", value: "y" }, carol),
      () => projects.getProject({ projectName: "does-not-exist" }, carol),
      () => users.createUser({ username: "mallory" }, carol),
      () => users.deleteUsers({ usernames: ["admin"] }, carol),
      () => users.updateUser({ username: "carol", globalRole: GlobalRole.ADMIN }, carol),
    ]) {
      expect((await connectError(call)).code).toBe(Code.PermissionDenied);
    }
    // Other users are invisible too.
    expect((await users.listUsers({}, carol)).users.map((u) => u.username)).toEqual(["carol"]);
  });

  it("answers bad input with InvalidArgument naming the field", async () => {
    const cases: [() => Promise<unknown>, string][] = [
      [() => users.createUser({ username: "" }, admin), "username"],
      [() => users.createUser({ username: "has space" }, admin), "username"],
      [() => users.createUser({ username: "dave", globalRole: 7 as GlobalRole }, admin), "global_role"],
      [() => projects.createProject({ projectName: "bad/name" }, admin), "project_name"],
      [() => projects.addProjectMembers({ projectName: "main", members: [{ username: "" }] }, admin), "members[0].username"],
      [() => secrets.createOrUpdateSecret({ projectName: "main", name: "1BAD", value: "v" }, admin), "name"],
      [() => users.deleteUsers({ usernames: [] }, admin), "usernames"],
    ];
    for (const [call, field] of cases) {
      const e = await connectError(call);
      expect(e.code, field).toBe(Code.InvalidArgument);
      expect(e.message).toContain(field);
      expect(e.metadata.get("x-dstack-field")).toBe(field);
    }
    const viaCurl = await curl(server.url, "ProjectService/CreateProject", { projectName: "" }, server.adminToken);
    expect(viaCurl).toMatchObject({ status: 400, body: { code: "invalid_argument" } });
    expect(viaCurl.body.message).toContain("project_name");
  });

  it("adds, lists and deletes the caller's SSH public keys with the generated client", async () => {
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmhQLSUGP0e36EIslPKOi5ba+8ThCfkHerh04SXYY2c laptop";
    const { user } = await users.createUser({ username: "keyholder" }, admin);
    const holder = as(user!.token);
    const added = (await users.addPublicKey({ key }, holder)).publicKey!;
    expect(added).toMatchObject({ name: "laptop", type: "ssh-ed25519", fingerprint: "SHA256:YCzjYcloCps1JYT8vSxxHFcgVtRqspuZetLEQdhg+aQ", key });
    expect(added.addedAt).toBeDefined();
    expect((await users.listPublicKeys({}, holder)).publicKeys.map((k) => k.id)).toEqual([added.id]);
    expect((await users.listPublicKeys({}, admin)).publicKeys).toEqual([]);
    expect((await connectError(users.addPublicKey({ key }, holder))).code).toBe(Code.AlreadyExists);
    const invalid = await connectError(users.addPublicKey({ key: "ssh-rsa AAAA" }, holder));
    expect(invalid.code).toBe(Code.InvalidArgument);
    expect(invalid.metadata.get("x-dstack-field")).toBe("key");
    expect((await connectError(users.deletePublicKeys({ ids: [added.id] }, admin))).code).toBe(Code.NotFound);
    await users.deletePublicKeys({ ids: [added.id] }, holder);
    expect((await users.listPublicKeys({}, holder)).publicKeys).toEqual([]);
  });

  it("pages ListUsers and ListProjects by name", async () => {
    const first = await users.listUsers({ limit: 1 }, admin);
    expect(first.users).toHaveLength(1);
    expect(first.nextPageToken).not.toBe("");
    const rest = await users.listUsers({ pageToken: first.nextPageToken }, admin);
    const all = await users.listUsers({}, admin);
    expect([...first.users, ...rest.users].map((u) => u.username)).toEqual(all.users.map((u) => u.username));
    expect(rest.nextPageToken).toBe("");
    const p1 = await projects.listProjects({ limit: 1 }, admin);
    expect(p1.projects).toHaveLength(1);
    const p2 = await projects.listProjects({ limit: 1000, pageToken: p1.nextPageToken }, admin);
    expect([...p1.projects, ...p2.projects].map((p) => p.name)).toEqual((await projects.listProjects({}, admin)).projects.map((p) => p.name));
    expect((await connectError(users.listUsers({ pageToken: "nope" }, admin))).code).toBe(Code.InvalidArgument);
  });

  it("maps catalogue errors to their codes and messages", async () => {
    const exists = await connectError(projects.createProject({ projectName: "main" }, admin));
    expect(exists.code).toBe(Code.AlreadyExists);
    expect(exists.rawMessage).toBe("Project 'main' already exists; choose another name.");
    const missing = await connectError(users.getUser({ username: "nobody" }, admin));
    expect(missing.code).toBe(Code.NotFound);
  });
});
