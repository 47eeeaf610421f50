// `dstack apply` end to end on this machine: a REAL server registers the machine as its `local`
// fleet (its host agent drives the Docker engine), and the `dstack` binary submits tasks that
// really run in the local test image — uploaded code, job stdout/stderr on the CLI's
// stdout/stderr, the job's exit status as the CLI's, `logs` afterwards, stop while attached.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Client } from "../../cli/src/index.js";
import { TEST_IMAGES, requireTestImages } from "../helpers/docker.js";
import { localFleetReady, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { dstack, startCli, waitForOutput, type CliRun } from "./run-cli.js";

const SLOW = 240_000;

const task = (name: string, commands: string[]) =>
  [`type: task`, `name: ${name}`, `image: ${TEST_IMAGES.busybox}`, `commands:`, ...commands.map((c) => `  - ${JSON.stringify(c)}`), `resources:`, `  cpu: 1..`, `  memory: 256MB..`, `  disk: 1GB..`, ``].join("\n");

let server: TestServer & { where: ServerEnv };
let cli: CliRun;
let client: Client;
let work: string;

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
});
