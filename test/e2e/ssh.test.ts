// `ssh <run>` and port forwards end to end on this machine: a REAL server with its local fleet
// (the real host agent, its embedded SSH server, real containers), the real `dstack` binary, and
// the real OpenSSH client. Nothing dials the host: ssh's ProxyCommand (`dstack ssh-proxy`) and
// attach's forwards ride TunnelService through the server to the tunnels the shim dialed in.
//
// One task serves everything: busybox `httpd` on a free port, with `ports:` naming it. `dstack
// apply` stays attached in the background and `dstack attach --port` runs beside it: each writes
// ~/.dstack/ssh/config once the run runs and forwards the port (the configuration's mapping, and
// the explicit one).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { UserService } from "@dstack/proto/api";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DSTACK_BIN, dstack, startCli, waitForOutput, type CliRun } from "../cli/run-cli.js";
import { TEST_IMAGES, docker, requireTestImages } from "../helpers/docker.js";
import { freePort, localFleetReady, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";

const exec = promisify(execFile);
const SLOW = 240_000;
// Container names follow run names and the engine outlives the test: unique per attempt.
const RUN = `ssh-${Date.now().toString(36)}`;

let server: TestServer & { where: ServerEnv };
let cli: CliRun;
let work: string;
let home: string;
let sshConfig: string;
let httpPort: number;
let explicitPort: number;
let attached: ReturnType<typeof startCli>;
let attachedExplicit: ReturnType<typeof startCli>;
/** The URL the attached apply printed for the configuration's port. */
let forwardedUrl: string;
const background: ChildProcess[] = [];

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command with the test's HOME (the ProxyCommand reads the CLI config from it) and no DSTACK_* leaking in. */
function run(cmd: string, args: string[], input = ""): Promise<Result> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("DSTACK_")) env[k] = v;
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...env, HOME: home, NO_COLOR: "1" }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.stdin.end(input);
    child.once("close", (code) => resolve({ code, stdout, stderr, ms: performance.now() - started }));
  });
}

const ssh = (args: string[], input = "", config = sshConfig) => run("ssh", ["-F", config, "-o", "BatchMode=yes", ...args], input);

/** Polls `fn` until it returns a value (no timing asserted: the test's own timeout bounds it). */
async function until<T>(fn: () => Promise<T | undefined>, what: string): Promise<T> {
  let last: unknown;
  for (let i = 0; i < 600; i++) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} never happened${last ? ` (last error: ${String(last)})` : ""}`);
}

async function fetchText(url: string): Promise<string> {
  const res = await fetch(url);
  return res.text();
}

/** A copy of the ssh config whose entry for RUN logs in with `key` instead of the CLI's. */
async function configWithKey(key: string, name: string): Promise<string> {
  const text = await readFile(sshConfig, "utf8");
  const path = join(work, name);
  await writeFile(path, text.replace(/^(\s*IdentityFile\s+).*$/m, `$1${key}`));
  return path;
}

async function keygen(name: string): Promise<{ path: string; pub: string }> {
  const path = join(work, name);
  await exec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path]);
  return { path, pub: (await readFile(`${path}.pub`, "utf8")).trim() };
}

async function runContainers(): Promise<string[]> {
  const all = await docker().listContainers({ all: true, filters: { name: [RUN] } });
  return all.map((c) => c.Id);
}

let userKey: { path: string; pub: string };
let strangerKey: { path: string; pub: string };

beforeEach(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
});

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  server = await startTestServer("sqlite", { localFleet: true });
  await localFleetReady(server);
  home = server.where.home;
  cli = { home };
  sshConfig = join(home, ".dstack", "ssh", "config");
  work = await mkdtemp(join(tmpdir(), "dstack-e2e-ssh-"));

  // A key the user registered with the server (not the CLI's): tasks accept it too.
  userKey = await keygen("user_key");
  strangerKey = await keygen("stranger_key");
  const users = createClient(
    UserService,
    createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${server.adminToken}`), next(req))] }),
  );
  await users.addPublicKey({ key: userKey.pub, name: "laptop" });

  // The container shares this machine's network (the local fleet): httpd's port must be free here.
  httpPort = await freePort();
  explicitPort = await freePort();
  while (explicitPort === httpPort) explicitPort = await freePort();
  const dir = await mkdtemp(join(work, "proj-"));
  const commands = ["mkdir -p /www", `echo "hello from ${RUN}" > /www/index.html`, "echo serving", `exec httpd -f -p ${httpPort} -h /www`];
  await writeFile(
    join(dir, ".dstack.yml"),
    [
      "type: task",
      `name: ${RUN}`,
      `image: ${TEST_IMAGES.busybox}`,
      `ports: [${httpPort}]`,
      "commands:",
      ...commands.map((c) => `  - ${JSON.stringify(c)}`),
      "resources:",
      "  cpu: 1..",
      "  memory: 256MB..",
      "  disk: 1GB..",
      "",
    ].join("\n"),
  );
  // `apply` stays attached (it sets up ssh and the configuration's ports once the run runs);
  // `attach --port` beside it forwards the same container port to a port of our choosing.
  attached = startCli(["apply", "-y", "--no-repo"], { ...cli, cwd: dir });
  await waitForOutput(attached, (out) => out.includes(`Run ${RUN} submitted. Attaching`));
  attachedExplicit = startCli(["attach", RUN, "--port", `${explicitPort}:${httpPort}`], cli);
  await waitForOutput(attached, (_out, err) => /Port \d+ is forwarded to \S+/.test(err) && err.includes(`To connect: ssh ${RUN}`));
  await waitForOutput(attachedExplicit, (_out, err) => /Port \d+ is forwarded to \S+/.test(err));
  forwardedUrl = /Port \d+ is forwarded to (\S+)/.exec(attached.stderr())![1]!;
}, SLOW);

afterAll(async () => {
  for (const c of [...background, attached?.child, attachedExplicit?.child]) if (c && c.exitCode === null) c.kill("SIGINT");
  await server?.stop();
  for (const id of await runContainers().catch(() => [])) await docker().getContainer(id).remove({ force: true }).catch(() => {});
  await server?.where.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
}, SLOW);

describe("ssh <run> through the server", () => {
  it("the attached apply wrote the Host entry (absolute ProxyCommand, the CLI's key) and says how to connect", async () => {
    const text = await readFile(sshConfig, "utf8");
    expect(text).toContain(`Host ${RUN}\n  HostName ${RUN}\n  User root\n  IdentityFile ${join(home, ".dstack", "ssh", "id_rsa")}\n  IdentitiesOnly yes\n`);
    expect(text).toContain(`  ProxyCommand "${process.execPath}" "${DSTACK_BIN}" ssh-proxy --project main ${RUN}\n`);
    expect((await readFile(join(home, ".dstack", "ssh", "id_rsa.pub"), "utf8")).trim()).toMatch(/^ssh-ed25519 /);
    // The temp HOME has no ~/.ssh/config: the CLI says which line to add (and does not add it).
    expect(attached.stderr()).toContain("  Include ~/.dstack/ssh/config\n");
    // `ports: [P]` asks for local port P, which on this machine is the container's own.
    expect(attached.stderr()).toMatch(new RegExp(`Port ${httpPort} is forwarded to http://127\\.0\\.0\\.1:\\d+ \\(the run shares this machine's network`));
    expect(forwardedUrl).not.toBe(`http://127.0.0.1:${httpPort}`);
    expect(attachedExplicit.stderr()).toContain(`Port ${httpPort} is forwarded to http://127.0.0.1:${explicitPort}\n`);
  });

  it(
    "runs a command: output, stdin, stderr, and the exit status come back",
    async () => {
      const hi = await ssh([RUN, "echo", "hi"]);
      expect(hi, hi.stderr).toMatchObject({ code: 0, stdout: "hi\n" });
      const seven = await ssh([RUN, "exit 7"]);
      expect(seven.code).toBe(7);
      const cat = await ssh([RUN, "cat; echo to-stderr >&2"], "from stdin\n");
      expect(cat).toMatchObject({ code: 0, stdout: "from stdin\n", stderr: "to-stderr\n" });
      const where = await ssh([RUN, "cat /www/index.html"]);
      expect(where.stdout).toBe(`hello from ${RUN}\n`);

      // Reported, not asserted: the same command through ssh (each one starts `dstack ssh-proxy`,
      // a Node process), through ssh on an already open connection (ControlMaster: the tunnel's
      // own round trip), and straight through `docker exec`.
      const [id] = await runContainers();
      const control = ["-o", `ControlPath=${join(work, "cm.sock")}`];
      const master = await ssh([...control, "-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-f", "-N", RUN]);
      expect(master.code, master.stderr).toBe(0);
      const cold: number[] = [];
      const warm: number[] = [];
      const direct: number[] = [];
      try {
        for (let i = 0; i < 3; i++) {
          cold.push((await ssh([RUN, "echo", "hi"])).ms);
          const w = await ssh([...control, RUN, "echo", "hi"]);
          expect(w.stdout).toBe("hi\n");
          warm.push(w.ms);
          direct.push((await run("docker", ["exec", id!, "sh", "-c", "echo hi"])).ms);
        }
      } finally {
        await ssh([...control, "-O", "exit", RUN]);
      }
      const show = (xs: number[]) => `median ${[...xs].sort((a, b) => a - b)[1]!.toFixed(0)} ms (${xs.map((x) => x.toFixed(0)).join(", ")})`;
      console.log(`echo hi in ${RUN}: ssh ${show(cold)}; ssh over an open connection ${show(warm)}; docker exec ${show(direct)}`);
    },
    SLOW,
  );

  it(
    "ssh -L forwards a local port to the container's httpd",
    async () => {
      const local = await freePort();
      const fwd = spawn("ssh", ["-F", sshConfig, "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-N", "-L", `${local}:127.0.0.1:${httpPort}`, RUN], {
        env: { ...process.env, HOME: home },
        stdio: ["ignore", "ignore", "pipe"],
      });
      background.push(fwd);
      try {
        const body = await until(async () => (fwd.exitCode === null ? fetchText(`http://127.0.0.1:${local}/`) : Promise.reject(new Error(`ssh -L exited ${fwd.exitCode}`))), "ssh -L answering");
        expect(body).toBe(`hello from ${RUN}\n`);
      } finally {
        fwd.kill("SIGTERM");
      }
    },
    SLOW,
  );

  it(
    "ssh -tt gives an interactive shell on a terminal",
    async () => {
      const r = await ssh(["-tt", RUN], "tty; echo cols=$(stty size); exit 4\n");
      expect(r.code, r.stderr).toBe(4);
      expect(r.stdout).toMatch(/\/dev\/pts\/\d+\r?\n/);
      expect(r.stdout).toMatch(/cols=\d+ \d+\r?\n/);
    },
    SLOW,
  );

  it(
    "VS Code Remote-SSH's way in: `ssh -T -D PORT host sh` with a script on stdin, then HTTP through the SOCKS forward",
    async () => {
      // Remote-SSH runs its install script this way and then reaches its server port with -D.
      const socks = await freePort();
      const script = `echo "listening on ${httpPort}"\nexec sleep 600\n`;
      const child = spawn("ssh", ["-F", sshConfig, "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-T", "-D", `127.0.0.1:${socks}`, RUN, "sh"], {
        env: { ...process.env, HOME: home },
        stdio: ["pipe", "pipe", "pipe"],
      });
      background.push(child);
      let out = "";
      child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
      child.stdin!.write(script);
      try {
        await until(async () => (out.includes(`listening on ${httpPort}`) ? true : undefined), "the script's output");
        const body = await until(async () => {
          const r = await run("curl", ["-sS", "--max-time", "5", "--socks5-hostname", `127.0.0.1:${socks}`, `http://127.0.0.1:${httpPort}/`]);
          return r.code === 0 ? r.stdout : undefined;
        }, "HTTP through the SOCKS forward");
        expect(body).toBe(`hello from ${RUN}\n`);
      } finally {
        child.kill("SIGTERM");
      }
    },
    SLOW,
  );

  it(
    "the user's registered key is let in; a key the task does not list is refused",
    async () => {
      const mine = await ssh([RUN, "echo", "registered"], "", await configWithKey(userKey.path, "user_config"));
      expect(mine, mine.stderr).toMatchObject({ code: 0, stdout: "registered\n" });
      const stranger = await ssh([RUN, "echo", "nope"], "", await configWithKey(strangerKey.path, "stranger_config"));
      expect(stranger.code).toBe(255);
      expect(stranger.stdout).toBe("");
      expect(stranger.stderr).toMatch(/Permission denied \(publickey\)/);
    },
    SLOW,
  );
});

describe("attach forwards the configuration's ports", () => {
  it(
    "the forwarded URLs reach the container's httpd, many connections at once",
    async () => {
      const bodies = await Promise.all(Array.from({ length: 8 }, () => fetchText(`${forwardedUrl}/`)));
      expect(bodies).toEqual(Array.from({ length: 8 }, () => `hello from ${RUN}\n`));
      expect(await fetchText(`http://127.0.0.1:${explicitPort}/`)).toBe(`hello from ${RUN}\n`);
    },
    SLOW,
  );

  it(
    "a detach (Ctrl-C) closes that CLI's forwards and keeps the Host entry",
    async () => {
      attachedExplicit.child.kill("SIGINT");
      const r = await attachedExplicit.done;
      expect(r.code).toBe(0);
      expect(r.stderr).toContain(`Detached from ${RUN}; the run goes on.`);
      await expect(fetch(`http://127.0.0.1:${explicitPort}/`)).rejects.toThrow();
      expect(await readFile(sshConfig, "utf8")).toContain(`Host ${RUN}\n`);
      expect(await fetchText(`${forwardedUrl}/`)).toBe(`hello from ${RUN}\n`);
    },
    SLOW,
  );

  it(
    "when the run stops: the attached CLI ends, its forwards close, the Host entry goes, the container is removed",
    async () => {
      const stop = await dstack(["stop", RUN, "-y"], cli);
      expect(stop.code, stop.stderr).toBe(0);
      const r = await attached.done;
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^Stopped/m);
      expect(await readFile(sshConfig, "utf8")).not.toContain(`Host ${RUN}\n`);
      await expect(fetch(`${forwardedUrl}/`)).rejects.toThrow();
      await until(async () => ((await runContainers()).length === 0 ? true : undefined), "the task's container removed");
    },
    SLOW,
  );
});
