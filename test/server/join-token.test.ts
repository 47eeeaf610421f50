// FleetService.CreateFleetJoinToken against a real server process, on SQLite and PostgreSQL:
// only project managers and admins get tokens; `dstack fleet join-token` prints the command
// line a host runs; a real `dstack-shim join` child process with that token enrolls, and the
// host shows up in the fleet with what it reported; tokens that expired, were used up, or
// whose fleet was deleted are refused with a message that says so.
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient, type Client as RpcClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { parseConfiguration, type FleetConfig } from "@dstack/proto";
import { FleetService, InstanceService, InstanceStatus, ProjectRole, ProjectService, UserService } from "@dstack/proto/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "../../cli/src/index.js";
import { dstack, type CliRun } from "../cli/run-cli.js";
import { DIALECTS, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";

const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const SHIM_BIN = join(REPO, "agent-shim", "bin", "dstack-shim.js");
const SLOW = 120_000;

/** A real host agent process joining with `args` (the words after `dstack-shim`). */
function startShim(args: string[]) {
  const child = spawn(process.execPath, [SHIM_BIN, ...args], { cwd: REPO, env: { ...process.env, DSTACK_SHIM_HOME: "" }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
  const exited = new Promise<number | null>((ok) => child.once("exit", (code) => ok(code)));
  return {
    child,
    exited,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}

/** The words of the `dstack-shim join …` line `dstack fleet join-token` printed. */
function joinLine(stdout: string): string[] {
  const line = stdout.split("\n").find((l) => l.trim().startsWith("dstack-shim join "));
  if (!line) throw new Error(`no dstack-shim line in:\n${stdout}`);
  return line.trim().split(/\s+/).slice(1);
}

const flag = (words: string[], name: string) => words[words.indexOf(name) + 1]!;

async function connectError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

describe.each(DIALECTS)("fleet join tokens on %s", (dialect) => {
  let server: TestServer & { where: ServerEnv };
  let cli: CliRun;
  let client: Client;
  let fleets: RpcClient<typeof FleetService>;
  let instances: RpcClient<typeof InstanceService>;
  let admin: { headers: { authorization: string } };
  let work: string;
  const shims: ReturnType<typeof startShim>[] = [];
  const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

  beforeAll(async () => {
    server = await startTestServer(dialect);
    cli = { home: server.where.home };
    client = Client.fromConfig({ env: { HOME: server.where.home } });
    const transport = createGrpcTransport({ baseUrl: server.url });
    fleets = createClient(FleetService, transport);
    instances = createClient(InstanceService, transport);
    admin = as(server.adminToken);
    work = await mkdtemp(join(tmpdir(), "dstack-join-"));
    await client.fleets.apply(parseConfiguration("type: fleet\nname: joiners\nnodes: 0\n", "fleet.dstack.yml") as FleetConfig);
  }, SLOW);

  afterAll(async () => {
    for (const s of shims) await s.stop();
    expect(await server?.stop()).toBe(0);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("is refused to project members below manager, and given to managers", async () => {
    const users = createClient(UserService, createGrpcTransport({ baseUrl: server.url }));
    const projects = createClient(ProjectService, createGrpcTransport({ baseUrl: server.url }));
    const member = (await users.createUser({ username: "member" }, admin)).user!.token;
    const manager = (await users.createUser({ username: "manager" }, admin)).user!.token;
    await projects.addProjectMembers({ projectName: "main", members: [{ username: "member", projectRole: ProjectRole.USER }, { username: "manager", projectRole: ProjectRole.MANAGER }] }, admin);

    const refused = await connectError(fleets.createFleetJoinToken({ projectName: "main", fleetName: "joiners" }, as(member)));
    expect(refused.code).toBe(Code.PermissionDenied);
    expect(refused.rawMessage).toMatch(/manager or admin role in project 'main'/);

    const t = await fleets.createFleetJoinToken({ projectName: "main", fleetName: "joiners" }, as(manager));
    expect(t.token).toMatch(/^dsj\./);
    expect(t.agentUrl).toBe(server.agentUrl);
    expect(t.caFingerprintSha256).toBe(server.caFingerprint);
    expect(t.installCommand).toBe(`dstack-shim join --server ${server.agentUrl} --token ${t.token} --ca-sha256 ${server.caFingerprint}`);

    const missing = await connectError(fleets.createFleetJoinToken({ projectName: "main", fleetName: "nope" }, admin));
    expect(missing.code).toBe(Code.NotFound);
    const badTtl = await connectError(fleets.createFleetJoinToken({ projectName: "main", fleetName: "joiners", ttl: { seconds: 0n, nanos: 1000 } }, admin));
    expect(badTtl.code).toBe(Code.InvalidArgument);
  });

  it(
    "`dstack fleet join-token` prints the line; a real shim joins with it and the host shows up in the fleet; a used-up token is refused",
    async () => {
      const r = await dstack(["fleet", "join-token", "joiners", "--ttl", "10m"], cli);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^  dstack-shim join --server ${server.agentUrl} --token dsj\\.\\S+ --ca-sha256 ${server.caFingerprint}$`, "m"));
      expect(r.stdout).toContain(`Only this machine can reach ${server.agentUrl}`); // the test server's agent URL is loopback
      const words = joinLine(r.stdout);
      const expiresAt = new Date(/^Expires:\s+(\S+)$/m.exec(r.stdout)![1]!);
      expect(expiresAt.getTime()).toBeGreaterThan(Date.now() + 9 * 60_000);

      const shim = startShim([...words, "--home", join(work, "host-a")]);
      shims.push(shim);
      // The host appears once its agent enrolled and reported the machine.
      let fleet = await client.fleets.get("joiners");
      while (fleet.instances[0]?.status !== InstanceStatus.IDLE) {
        if (shim.child.exitCode !== null) throw new Error(`the shim exited:\n${shim.output()}`);
        await new Promise((ok) => setTimeout(ok, 100));
        fleet = await client.fleets.get("joiners");
      }
      const listed = (await instances.listInstances({ projectNames: ["main"], fleetNames: ["joiners"] }, admin)).instances;
      expect(listed).toHaveLength(1);
      const host = listed[0]!;
      expect(host).toMatchObject({ fleetName: "joiners", instanceNum: 0, status: InstanceStatus.IDLE, unreachable: false });
      expect(host.hostname).not.toBe("");
      expect(host.instanceType?.resources?.cpus).toBeGreaterThan(0);
      expect(host.instanceType?.resources?.memoryMib).toBeGreaterThan(0n);

      const get = await dstack(["fleet", "get", "joiners"], cli);
      expect(get.code, get.stderr).toBe(0);
      expect(get.stdout).toMatch(/^\s+instance=0\s+cpu=\d+ mem=[\d.]+GB .*\sidle\s/m);

      // The default is one host per token: a second host with the same token is refused.
      const again = startShim([...words, "--home", join(work, "host-b")]);
      shims.push(again);
      expect(await again.exited).toBe(1);
      expect(again.output()).toMatch(/Join token is used up: it allowed 1 enrollment/);
    },
    SLOW,
  );

  it(
    "refuses an expired token, and the tokens of a deleted fleet, saying why",
    async () => {
      await client.fleets.apply(parseConfiguration("type: fleet\nname: doomed\nnodes: 0\n", "fleet.dstack.yml") as FleetConfig);
      const short = await fleets.createFleetJoinToken({ projectName: "main", fleetName: "doomed", ttl: { seconds: 1n } }, admin);
      const revoked = await fleets.createFleetJoinToken({ projectName: "main", fleetName: "doomed", maxUses: 5 }, admin);
      await new Promise((ok) => setTimeout(ok, 1_500)); // past the short token's expiry
      const late = startShim(["join", "--server", short.agentUrl, "--token", short.token, "--ca-sha256", short.caFingerprintSha256, "--home", join(work, "host-late")]);
      shims.push(late);
      expect(await late.exited).toBe(1);
      expect(late.output()).toMatch(/Join token expired at /);

      const del = await dstack(["fleet", "delete", "doomed", "-y"], cli);
      expect(del.code, del.stderr).toBe(0);
      const gone = startShim(revoked.installCommand.split(" ").slice(1).concat(["--home", join(work, "host-gone")]));
      shims.push(gone);
      expect(await gone.exited).toBe(1);
      expect(gone.output()).toMatch(/Join token was revoked/);
      expect((await instances.listInstances({ projectNames: ["main"], fleetNames: ["doomed"] }, admin)).instances).toEqual([]);
    },
    SLOW,
  );
});
