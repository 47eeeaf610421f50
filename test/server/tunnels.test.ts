// Tunnels through the public API against a REAL server process: a simulated shim (the real link
// library, enrolled with a fleet join token) hosts a run's job, which is started through the API
// and the simulated agents (SubmitTask → runner → RUNNING). TunnelService.OpenRunTunnel over
// gRPC/h2c then reaches the job's port (an echo server in this test) and its SSH server (a tiny
// ssh2 server here) through the server and the tunnel the shim dials in; the real OpenSSH client
// gets there through `ProxyCommand` running the CLI's sshProxy. Refusals name the run.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { PassThrough, type Duplex } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { parseConfiguration, toProtoConfiguration, type FleetConfig } from "@dstack/proto";
import { JobState, TaskInfoSchema, TaskState, TunnelTarget, type OpenTunnelCommand, type ShimCommand, type TaskInfo } from "@dstack/proto/agent";
import {
  JobStatus,
  OpenRunTunnelRequestSchema,
  RunService,
  RunStatus,
  RunTunnelOpenSchema,
  RunTunnelTarget,
  TunnelService,
  UserService,
  type OpenRunTunnelRequest,
  type OpenRunTunnelResponse,
  type Run,
} from "@dstack/proto/api";
import { acceptTunnel, AsyncQueue, connectLink, enroll, serveTunnelToTcp, type LinkClient } from "@dstack/proto/link";
import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sshProxy } from "../../cli/src/commands/ssh-proxy.js";
import { openDatabase } from "../../server/src/db/database.js";
import { Project } from "../../server/src/db/entities.js";
import { JoinTokens } from "../../server/src/mesh/join-tokens.js";
import { createServices } from "../../server/src/services/index.js";
import { loadSettings } from "../../server/src/settings.js";
import { createServerEnv, startServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { FAST_BACKOFF, Inbox, SIM_HOST, SimRunner, until, within } from "../helpers/sim-agents.js";

const exec = promisify(execFile);
const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const PROXY_COMMAND = join(REPO, "test", "server", "ssh-proxy-command.ts");
const MB = 1024 * 1024;
type SubmitTask = Extract<ShimCommand["command"], { case: "submitTask" }>["value"];

/** A TCP server for the test. */
async function tcpServer(onConn: (s: net.Socket) => void): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => (s.on("error", () => {}), onConn(s)));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((r) => (server.close(() => r()), server.unref())) };
}

/** An SSH server that logs anyone in and answers `exec` with what it ran (stands in for the shim's). */
async function tinySshServer(): Promise<{ port: number; close(): void }> {
  const hostKey = ssh2.utils.generateKeyPairSync("ed25519").private;
  const server = new ssh2.Server({ hostKeys: [hostKey] }, (client) => {
    client.on("error", () => {});
    client.on("authentication", (ctx) => ctx.accept());
    client.on("ready", () => {
      client.on("session", (accept) => {
        accept().on("exec", (acceptExec, _reject, info) => {
          const ch = acceptExec();
          ch.write(`ran: ${info.command}\n`);
          ch.exit(0);
          ch.end();
        });
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

/**
 * A host agent on the real link library: runs tasks in memory and serves `open_tunnel` with
 * acceptTunnel + serveTunnelToTcp, mapping the job's SSH server and container ports to TCP
 * servers of this test (`ports`).
 */
class TunnelShim {
  readonly inbox = new Inbox<{ case: string; value: unknown }>();
  readonly opened: OpenTunnelCommand[] = [];
  readonly tasks = new Map<string, TaskInfo>();
  link!: LinkClient;
  instanceId = "";
  constructor(
    private readonly home: string,
    readonly ports: { ssh: number; container: Map<number, number> },
  ) {}

  static async join(server: TestServer, token: string, ports: TunnelShim["ports"]): Promise<TunnelShim> {
    const home = mkdtempSync(join(tmpdir(), "dstack-tunnel-shim-"));
    const id = await enroll({ serverUrl: server.agentUrl, token, caSha256: server.caFingerprint, kind: "shim", home, identity: { hostname: "tunnel-host" } });
    const s = new TunnelShim(home, ports);
    s.instanceId = id.agentId;
    s.start();
    await s.link.waitConnected(20_000);
    return s;
  }

  start(): void {
    this.link = connectLink({
      kind: "shim",
      home: this.home,
      backoff: FAST_BACKOFF,
      stateReport: () => ({ agentVersion: "sim", startedAt: timestampNow(), hostInfo: SIM_HOST, tasks: [...this.tasks.values()] }),
      handlers: {
        submitTask: (c) => {
          this.inbox.push({ case: "submitTask", value: c });
          const task = create(TaskInfoSchema, { taskId: c.taskId, state: TaskState.PENDING, containerName: c.containerName, updatedAt: timestampNow() });
          this.tasks.set(c.taskId, task);
          return { task };
        },
        terminateTask: (c) => {
          this.setTask(c.taskId, TaskState.TERMINATED);
          return { task: this.tasks.get(c.taskId)! };
        },
        removeTask: (c) => (this.tasks.delete(c.taskId), {}),
        openTunnel: async (c, ctx) => {
          this.opened.push(c);
          const port = c.target === TunnelTarget.SSH ? this.ports.ssh : (this.ports.container.get(c.port) ?? 1);
          const tunnel = await acceptTunnel({ home: this.home, tunnelId: c.tunnelId, signal: ctx.signal });
          await serveTunnelToTcp(tunnel, "127.0.0.1", port);
          return {};
        },
      },
    });
  }

  setTask(taskId: string, state: TaskState): void {
    const next = create(TaskInfoSchema, { ...(this.tasks.get(taskId) ?? { taskId }), state, updatedAt: timestampNow() });
    this.tasks.set(taskId, next);
    this.link.sendEvent({ event: { case: "taskStateChanged", value: { task: next } } });
  }

  async close(): Promise<void> {
    await this.link.close();
    rmSync(this.home, { recursive: true, force: true });
  }
}

/** A raw OpenRunTunnel call: push requests, read responses. */
function rawTunnel(client: Client<typeof TunnelService>, auth: { headers: Record<string, string> }, open: MessageInitShape<typeof RunTunnelOpenSchema>) {
  const out = new AsyncQueue<OpenRunTunnelRequest>();
  out.push(create(OpenRunTunnelRequestSchema, { frame: { case: "open", value: open } }));
  const responses = client.openRunTunnel(out, auth)[Symbol.asyncIterator]();
  return {
    send: (b: string) => out.push(create(OpenRunTunnelRequestSchema, { frame: { case: "data", value: Buffer.from(b) } })),
    halfClose: () => out.push(create(OpenRunTunnelRequestSchema, { frame: { case: "halfClose", value: {} } })),
    end: () => out.end(),
    next: (): Promise<IteratorResult<OpenRunTunnelResponse>> => within(responses.next(), 20_000, "a tunnel response"),
  };
}

async function connectError(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

/** Runs sshProxy with `input` as stdin; resolves with everything it wrote to stdout. */
async function proxyRoundTrip(server: TestServer, token: string, run: string, input: Buffer | string, extra: { target?: "ssh" | "port"; port?: number } = {}): Promise<Buffer> {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const parts: Buffer[] = [];
  stdout.on("data", (c: Buffer) => parts.push(c));
  const done = sshProxy({ serverUrl: server.url, token, project: "main", run, stdin, stdout, ...extra });
  stdin.end(input);
  await done;
  return Buffer.concat(parts);
}

describe("tunnels through the public API (real server, simulated shim and runner)", () => {
  let where: ServerEnv;
  let server: TestServer;
  let shim: TunnelShim;
  let runner: SimRunner | undefined;
  let runs: Client<typeof RunService>;
  let tunnels: Client<typeof TunnelService>;
  let admin: { headers: { authorization: string } };
  let outsiderToken = "";
  let jobId = "";
  let echo: Awaited<ReturnType<typeof tcpServer>>;
  let sshd: Awaited<ReturnType<typeof tinySshServer>>;

  const getRun = async (name: string) => (await runs.getRun({ projectName: "main", run: { case: "runName", value: name } }, admin)).run!;
  const runUntil = (name: string, pred: (r: Run) => boolean, what: string) => until(async () => ((r) => (pred(r) ? r : undefined))(await getRun(name)), `${name}: ${what}`);

  beforeAll(async () => {
    echo = await tcpServer((s) => s.pipe(s));
    sshd = await tinySshServer();
    where = await createServerEnv("sqlite");
    const first = await startServer(where);
    expect(await first.stop()).toBe(0);
    // A fleet and a shim join token, written through the services (as an admin would via the API).
    const settings = loadSettings({ ...process.env, DSTACK_SERVER_ADMIN_TOKEN: "", ...where.env });
    const orm = await openDatabase(settings.database);
    let shimToken: string;
    try {
      const svc = createServices(orm, settings);
      const actor = await svc.users.authenticate(first.adminToken);
      const fleet = await svc.fleets.apply(actor, "main", parseConfiguration("type: fleet\nname: pull\nnodes: 0\n", "fleet.dstack.yml") as FleetConfig);
      const project = await orm.em.fork().findOneOrFail(Project, { name: "main" });
      shimToken = (await new JoinTokens(orm).create({ projectId: project.id, fleetId: fleet.id, kind: "shim" })).token;
    } finally {
      await orm.close(true);
    }
    server = await startServer(where);
    const transport = createGrpcTransport({ baseUrl: server.url }); // gRPC over h2c on the shared port
    runs = createClient(RunService, transport);
    tunnels = createClient(TunnelService, transport);
    admin = { headers: { authorization: `Bearer ${server.adminToken}` } };
    outsiderToken = (await createClient(UserService, transport).createUser({ username: "outsider" }, admin)).user!.token;
    shim = await TunnelShim.join(server, shimToken, { ssh: sshd.port, container: new Map([[8000, echo.port]]) });

    // The job starts through the API and the simulated agents: placed on the shim, its container
    // pulled and running, the runner enrolled and reporting RUNNING.
    await runs.applyRun({ projectName: "main", runSpec: { runName: "web", configuration: toProtoConfiguration(parseConfiguration("type: task\ncommands: [python -m http.server 8000]\nports: [8000]\n", ".dstack.yml")) } }, admin);
    jobId = (await until(async () => (await getRun("web")).latestJobSubmission?.id || undefined, "a job")) as string;
    const task = (await shim.inbox.next((x) => x.case === "submitTask" && (x.value as SubmitTask).taskId === jobId, "submitTask")).value as SubmitTask;
    shim.setTask(jobId, TaskState.PULLING);
    shim.setTask(jobId, TaskState.RUNNING);
    runner = await SimRunner.start(task.runner!, jobId);
    await runner.inbox.next((x) => x.case === "submitJob", "submitJob");
    runner.report(JobState.RUNNING);
    await runUntil("web", (r) => r.status === RunStatus.RUNNING && r.latestJobSubmission?.status === JobStatus.RUNNING, "run running");
  });

  afterAll(async () => {
    await runner?.close();
    await shim?.close();
    if (server) expect(await server.stop()).toBe(0);
    await where?.cleanup();
    sshd?.close();
    await echo?.close();
  });

  it("reaches the job's container port: opened, bytes both ways, half-closes, a clean end", async () => {
    const t = rawTunnel(tunnels, admin, { projectName: "main", runName: "web", target: RunTunnelTarget.PORT, port: 8000 });
    const opened = await t.next();
    expect(opened.value?.frame).toEqual({ case: "opened", value: expect.objectContaining({ jobSubmissionId: jobId, instanceName: "pull-0" }) });
    // The shim was asked for the job's container port 8000 (task = the job submission).
    expect(shim.opened.at(-1)).toMatchObject({ target: TunnelTarget.CONTAINER_PORT, taskId: jobId, port: 8000 });
    t.send("hello ");
    t.send("tunnel");
    t.halfClose();
    t.end();
    let got = "";
    for (;;) {
      const r = await t.next();
      if (r.done) break;
      const f = r.value.frame;
      if (f.case === "data") got += Buffer.from(f.value).toString();
      else expect(f.case).toBe("halfClose");
    }
    expect(got).toBe("hello tunnel");
  });

  it("sshProxy carries 20 MB intact to the job's port and back (gRPC over h2c), and reports throughput", async () => {
    const data = randomBytes(20 * MB);
    const t0 = performance.now();
    const got = await proxyRoundTrip(server, server.adminToken, "web", data, { target: "port", port: 8000 });
    const s = (performance.now() - t0) / 1000;
    expect(got.length).toBe(data.length);
    expect(createHash("sha256").update(got).digest("hex")).toBe(createHash("sha256").update(data).digest("hex"));
    console.log(`[tunnel api] 20 MB echoed client → server process → shim → job port and back in ${s.toFixed(2)} s: ${(20 / s).toFixed(1)} MB/s each way`);
  });

  it("the real OpenSSH client reaches the job's SSH server with ProxyCommand running sshProxy", async () => {
    const { stdout } = await exec(
      "ssh",
      [
        "-F", "/dev/null",
        "-o", `ProxyCommand=${process.execPath} --import tsx ${PROXY_COMMAND} %n`,
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR",
        "root@web",
        "echo hello from the run",
      ],
      { cwd: REPO, env: { ...process.env, DSTACK_SERVER_URL: server.url, DSTACK_TOKEN: server.adminToken, DSTACK_PROJECT: "main" }, timeout: 60_000 },
    );
    expect(stdout).toBe("ran: echo hello from the run\n");
    expect(shim.opened.at(-1)).toMatchObject({ target: TunnelTarget.SSH, taskId: jobId });
  });

  it("measures the latency a tunnel through the API adds to a 1-byte round trip", async () => {
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    let opened!: () => void;
    const isOpen = new Promise<void>((r) => (opened = r));
    const done = sshProxy({ serverUrl: server.url, token: server.adminToken, project: "main", run: "web", target: "port", port: 8000, stdin, stdout }, () => opened());
    await isOpen;
    const rtt = async (w: { write(b: Buffer): unknown }, r: Duplex | PassThrough, n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        const t0 = process.hrtime.bigint();
        const got = new Promise((res) => r.once("data", res));
        w.write(Buffer.from([i & 0xff]));
        await got;
        out.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
      return out.sort((a, b) => a - b)[Math.floor(n / 2)]!;
    };
    const direct = net.connect({ port: echo.port, host: "127.0.0.1", noDelay: true });
    await new Promise((r) => direct.once("connect", r));
    await rtt(direct, direct, 30);
    await rtt(stdin, stdout, 30);
    const d = await rtt(direct, direct, 200);
    const viaApi = await rtt(stdin, stdout, 200);
    console.log(`[tunnel api] 1-byte round trip, median of 200: direct TCP ${d.toFixed(0)} µs, client → server process → shim → port ${viaApi.toFixed(0)} µs (+${(viaApi - d).toFixed(0)} µs)`);
    direct.end();
    stdin.end();
    await done;
  });

  it("refuses a user who is not a member of the project", async () => {
    const e = await connectError(proxyRoundTrip(server, outsiderToken, "web", "x"));
    expect(e.code).toBe(Code.PermissionDenied);
    expect(e.rawMessage).toMatch(/^Access denied: 'runs.apply' on project 'main' requires/);
  });

  it("names the run when it does not exist or is not running", async () => {
    const missing = await connectError(proxyRoundTrip(server, server.adminToken, "nope", "x"));
    expect([missing.code, missing.rawMessage]).toEqual([Code.NotFound, "Run 'nope' does not exist in project 'main'. List runs with `dstack ps -a`."]);
    // A run no fleet can take fails at once: not running.
    await runs.applyRun({ projectName: "main", runSpec: { runName: "too-big", configuration: toProtoConfiguration(parseConfiguration("type: task\ncommands: [echo]\nresources: {cpu: 512}\n", ".dstack.yml")) } }, admin);
    await runUntil("too-big", (r) => r.status === RunStatus.FAILED, "no capacity");
    const idle = await connectError(proxyRoundTrip(server, server.adminToken, "too-big", "x"));
    expect(idle.code).toBe(Code.FailedPrecondition);
    expect(idle.rawMessage).toMatch(/^Run 'too-big' is failed; ssh and port forwarding need it running\./);
  });

  it("says which run it could not reach when the port refuses or the shim is away", async () => {
    const refused = await connectError(proxyRoundTrip(server, server.adminToken, "web", "x", { target: "port", port: 9 }));
    expect(refused.code).toBe(Code.Unavailable);
    expect(refused.rawMessage).toMatch(/^Cannot reach run 'web' on instance 'pull-0': connect ECONNREFUSED/);
    const bad = await connectError(proxyRoundTrip(server, server.adminToken, "web", "x", { target: "port", port: 70000 }));
    expect([bad.code, bad.rawMessage]).toEqual([Code.InvalidArgument, "open.port: must be 1-65535 for RUN_TUNNEL_TARGET_PORT (got 70000)"]);

    await shim.link.close();
    await until(async () => (shim.link.connected ? undefined : true), "the shim to go away");
    const away = await connectError(proxyRoundTrip(server, server.adminToken, "web", "x"));
    expect(away.code).toBe(Code.Unavailable);
    expect(away.rawMessage).toMatch(new RegExp(`^Cannot reach run 'web' on instance 'pull-0': shim ${shim.instanceId} is not connected to the server`));
    // Back again: tunnels work once it dials in.
    shim.start();
    await shim.link.waitConnected(20_000);
    expect((await proxyRoundTrip(server, server.adminToken, "web", "back", { target: "port", port: 8000 })).toString()).toBe("back");
  });
});
