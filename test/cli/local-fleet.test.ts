// `dstack apply` end to end on this machine: a REAL server registers the machine as its `local`
// fleet (its host agent drives the Docker engine), and the `dstack` binary submits tasks that
// really run in the local test image — uploaded code, job stdout/stderr on the CLI's
// stdout/stderr, the job's exit status as the CLI's, `logs` afterwards, stop (graceful and abort),
// `apply -d` followed by `logs -f`.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Client } from "../../cli/src/index.js";
import { TEST_IMAGES, docker, requireTestImages, removeContainers } from "../helpers/docker.js";
import { localFleetReady, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { dstack, startCli, waitForOutput, type CliRun } from "./run-cli.js";

const SLOW = 240_000;

const task = (name: string, commands: string[]) =>
  [`type: task`, `name: ${name}`, `image: ${TEST_IMAGES.busybox}`, `commands:`, ...commands.map((c) => `  - ${JSON.stringify(c)}`), `resources:`, `  cpu: 1..`, `  memory: 256MB..`, `  disk: 1GB..`, ``].join("\n");

let server: TestServer & { where: ServerEnv };
let cli: CliRun;
let client: Client;
let work: string;

/** Polls a condition every 100 ms for up to 30 s. */
async function until(cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("condition not met within 30 s");
}

async function dir(files: Record<string, string>): Promise<string> {
  const d = await mkdtemp(join(work, "proj-"));
  for (const [path, text] of Object.entries(files)) await writeFile(join(d, path), text);
  return d;
}

beforeEach(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
});

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  server = await startTestServer("sqlite", { localFleet: true });
  await localFleetReady(server);
  work = await mkdtemp(join(tmpdir(), "dstack-cli-local-"));
  cli = { home: server.where.home };
  client = Client.fromConfig({ env: { HOME: server.where.home } });
}, SLOW);

afterAll(async () => {
  await server?.stop();
  await removeContainers("^/local-");
  if (work) await rm(work, { recursive: true, force: true });
});

describe("dstack apply on the local fleet", () => {
  it(
    "runs the task with the uploaded code: job stdout to stdout, stderr to stderr, its exit status as the CLI's",
    async () => {
      const d = await dir({
        ".dstack.yml": task("local-code", ["cat data.txt", "ls", "echo oops >&2", "exit 3"]),
        "data.txt": "payload-123\n",
        ".gitignore": "secret.txt\n",
        "secret.txt": "must not be uploaded\n",
      });
      const r = await dstack(["apply", "-y"], { ...cli, cwd: d });
      expect(r.stdout).toMatch(/^ 1\s+local\s+cpu=1 /m);
      const out = r.stdout.slice(r.stdout.indexOf("Attaching"));
      expect(out).toContain("payload-123\n");
      expect(out).toContain("data.txt\n");
      expect(out).not.toContain("secret.txt");
      expect(r.stderr).toMatch(/^oops$/m);
      expect(r.stderr).toMatch(/^Exited \(3\)$/m);
      expect(r.code).toBe(3);

      const ps = await dstack(["ps", "-a"], cli);
      // RESOURCES: the job's block of this machine (`blocks: auto` = one CPU each), disk shared.
      expect(ps.stdout).toMatch(/^ local-code\s+local\s+cpu=1 mem=[\d.]+GB disk=[\d.]+GB\s+\$0\s+exited \(3\)\s+/m);
    },
    SLOW,
  );

  it(
    "exits 0 for a task that succeeds, and `logs` prints its output again afterwards",
    async () => {
      const d = await dir({ ".dstack.yml": task("local-ok", ["echo line one", "echo line two"]) });
      const r = await dstack(["apply", "-y", "--no-repo"], { ...cli, cwd: d });
      expect(r.stdout).toMatch(/Attaching.*\nline one\nline two\n$/s);
      expect(r.code).toBe(0);
      expect(await dstack(["logs", "local-ok"], cli)).toEqual({ code: 0, stdout: "line one\nline two\n", stderr: "" });
      // Re-applying a finished run replaces it: a new run of the same name runs and finishes.
      const before = (await client.runs.get("local-ok")).id;
      const again = await dstack(["apply", "-y", "--no-repo"], { ...cli, cwd: d });
      expect(again.stdout).toMatch(/Attaching.*\nline one\nline two\n$/s);
      expect(again.code).toBe(0);
      expect((await client.runs.get("local-ok")).id).not.toBe(before);
    },
    SLOW,
  );

  it(
    "a run aborted while attached ends the attached apply with exit 1 and says so",
    async () => {
      const d = await dir({ ".dstack.yml": task("local-long", ["echo started", "sleep 300"]) });
      const run = startCli(["apply", "-y", "--no-repo"], { ...cli, cwd: d });
      await waitForOutput(run, (out) => out.includes("started\n"));
      const stop = await dstack(["stop", "local-long", "-x", "-y"], cli);
      expect(stop.stdout).toBe("Aborted\n");
      const r = await run.done;
      expect(r.stderr).toMatch(/^Aborted$/m);
      expect(r.code).toBe(1);
      expect((await client.runs.get("local-long")).status).toBeDefined();
    },
    SLOW,
  );

  it(
    "stop gives the job its grace: SIGTERM reaches the commands, their last words are kept, the run ends stopped and its container goes",
    async () => {
      const d = await dir({
        ".dstack.yml": task("local-grace", ["trap 'echo cleaning up; sleep 1; echo clean; exit 0' TERM", "echo started", "while true; do sleep 0.2; done"]),
      });
      expect((await dstack(["apply", "-y", "-d", "--no-repo"], { ...cli, cwd: d })).code).toBe(0);
      const follow = startCli(["logs", "-f", "local-grace"], cli);
      await waitForOutput(follow, (out) => out.includes("started\n"));

      const stop = await dstack(["stop", "local-grace", "-y"], cli);
      expect(stop).toEqual({ code: 0, stdout: "Stopped\n", stderr: "" });
      // The trap ran to its end (a kill would have cut it before "clean"), and `logs -f` ends with the run.
      const f = await follow.done;
      expect(f.stdout).toBe("started\ncleaning up\nclean\n");
      expect(f.code).toBe(0);

      const ps = await dstack(["ps", "-a"], cli);
      expect(ps.stdout).toMatch(/^ local-grace\s+local\s+.*\bstopped\s+/m);
      await until(async () => (await docker().listContainers({ all: true, filters: { name: ["local-grace-"] } })).length === 0);
    },
    SLOW,
  );

  it(
    "stop --abort does not wait for a job that ignores SIGTERM: the run ends aborted at once and its container goes",
    async () => {
      const d = await dir({ ".dstack.yml": task("local-stubborn", ["trap '' TERM", "echo started", "while true; do sleep 0.2; done"]) });
      expect((await dstack(["apply", "-y", "-d", "--no-repo"], { ...cli, cwd: d })).code).toBe(0);
      const follow = startCli(["logs", "-f", "local-stubborn"], cli);
      await waitForOutput(follow, (out) => out.includes("started\n"));
      const t0 = Date.now();
      expect(await dstack(["stop", "local-stubborn", "--abort", "-y"], cli)).toEqual({ code: 0, stdout: "Aborted\n", stderr: "" });
      expect((await follow.done).code).toBe(0);
      // Well under the default stop_duration (5 s) that a graceful stop would have waited out.
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect((await dstack(["ps", "-a"], cli)).stdout).toMatch(/^ local-stubborn\s+local\s+.*\baborted\s+/m);
      await until(async () => (await docker().listContainers({ all: true, filters: { name: ["local-stubborn-"] } })).length === 0);
    },
    SLOW,
  );

  it(
    "apply -d returns at once; logs -f prints every line as the job writes it and ends with the run",
    async () => {
      const d = await dir({ ".dstack.yml": task("local-detached", ["for i in 1 2 3 4 5; do echo tick $i; sleep 0.3; done", "echo bye >&2"]) });
      const a = await dstack(["apply", "-y", "-d", "--no-repo"], { ...cli, cwd: d });
      expect(a.code).toBe(0);
      expect(a.stdout).not.toContain("tick");
      const f = await dstack(["logs", "-f", "local-detached"], cli);
      expect(f).toEqual({ code: 0, stdout: "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n", stderr: "bye\n" });
      expect((await dstack(["ps", "-a"], cli)).stdout).toMatch(/^ local-detached\s+local\s+.*\bexited \(0\)\s+/m);
    },
    SLOW,
  );

  it(
    "a dev environment runs its init, prints how to open it in the IDE and over SSH, stays up, and stops on `dstack stop`",
    async () => {
      const d = await dir({
        ".dstack.yml": [`type: dev-environment`, `name: local-dev`, `image: ${TEST_IMAGES.busybox}`, `ide: vscode`, `init:`, `  - echo init done`, `resources:`, `  cpu: 1..`, `  memory: 256MB..`, ``].join("\n"),
      });
      const attached = startCli(["apply", "-y", "--no-repo"], { ...cli, cwd: d });
      await waitForOutput(attached, (out) => out.includes("dstack stop local-dev\n"));
      expect(attached.stdout()).toContain("init done\nOpen it in VS Code:\n  vscode://vscode-remote/ssh-remote+local-dev/workflow\n\nConnect with SSH: ssh local-dev\n");
      // Its commands are done, yet it stays up until stopped.
      await new Promise((r) => setTimeout(r, 1000));
      expect((await dstack(["ps"], cli)).stdout).toMatch(/^ local-dev\s+local\s+.*\brunning\s+/m);
      expect(await dstack(["stop", "local-dev", "-y"], cli)).toEqual({ code: 0, stdout: "Stopped\n", stderr: "" });
      // The attached CLI ends with the run; as dstack's, only a run that is done exits 0.
      const a = await attached.done;
      expect([a.code, a.stderr]).toEqual([1, expect.stringMatching(/^Stopped$/m)]);
      expect((await dstack(["ps", "-a"], cli)).stdout).toMatch(/^ local-dev\s+local\s+.*\bstopped\s+/m);
    },
    SLOW,
  );

  it(
    "an instance volume (`volumes: [HOST:CONTAINER]`) mounts a host directory: the job reads what is there and what it writes stays",
    async () => {
      const hostDir = await mkdtemp(join(work, "instance-volume-"));
      await writeFile(join(hostDir, "in.txt"), "from the host\n");
      const d = await dir({
        ".dstack.yml": task("local-volume", ["cat /data/in.txt", "echo from the job > /data/out.txt"]) + `volumes:\n  - ${hostDir}:/data\n`,
      });
      const r = await dstack(["apply", "-y", "--no-repo"], { ...cli, cwd: d });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/Attaching.*\nfrom the host\n$/s);
      expect(await readFile(join(hostDir, "out.txt"), "utf8")).toBe("from the job\n");
    },
    SLOW,
  );

  it(
    "apply -e sets environment variables: KEY=VALUE as given, a bare KEY from the CLI's own environment",
    async () => {
      const d = await dir({ ".dstack.yml": task("local-env", ['echo "greeting=$GREETING from_shell=$FROM_SHELL"']) });
      const r = await dstack(["apply", "-y", "--no-repo", "-e", "GREETING=hello there", "-e", "FROM_SHELL"], { ...cli, cwd: d, env: { FROM_SHELL: "shell-value" } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/Attaching.*\ngreeting=hello there from_shell=shell-value\n$/s);
    },
    SLOW,
  );
});
