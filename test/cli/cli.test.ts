// The `dstack` binary against a REAL server process. The server runs without its local fleet
// here (no agents, no instances), so a task with `retry: on no-capacity` stays pending
// (retrying) until it is stopped: enough to submit, list, attach/detach, stop and delete runs; the server writes
// ~/.dstack/config.yml into the test HOME at start, exactly as on a user's machine.
import { randomBytes } from "node:crypto";
import { cp, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildCodeArchive, Client, isRunFinished } from "../../cli/src/index.js";
import { createServerEnv, freePort, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { dstack, startCli, waitForOutput, type CliRun } from "./run-cli.js";

const SLOW = 180_000;
const CODE_LIMIT = 64 * 1024;
const NO_STACK = /\bat .*\.(ts|js):\d+/;

const pendingTask = (name: string) => `type: task\nname: ${name}\ncommands:\n  - echo hello\nretry:\n  on_events: [no-capacity]\n  duration: 1h\n`;

let server: TestServer & { where: ServerEnv };
let client: Client;
let work: string;
let cli: CliRun;

async function project(files: Record<string, string | Buffer>): Promise<string> {
  const dir = await mkdtemp(join(work, "proj-"));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(dir, path, ".."), { recursive: true });
    await writeFile(join(dir, path), content);
  }
  return dir;
}

async function untilFinished(name: string): Promise<void> {
  const ac = new AbortController();
  try {
    for await (const u of client.runs.watch([name], { signal: ac.signal })) if (u.run && isRunFinished(u.run)) return;
  } finally {
    ac.abort();
  }
}

type JsonRun = { runSpec: { runName: string; repoCodeHash?: string }; status: string };
async function psJson(extra: string[] = [], opts: Partial<CliRun> = {}): Promise<JsonRun[]> {
  const r = await dstack(["ps", "-a", "--json", ...extra], { ...cli, ...opts });
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as { runs: JsonRun[] }).runs;
}

beforeAll(async () => {
  server = await startTestServer("sqlite", { env: { DSTACK_SERVER_CODE_UPLOAD_LIMIT: String(CODE_LIMIT), DSTACK_SERVER_NO_LOCAL_FLEET: "1" } });
  work = await mkdtemp(join(tmpdir(), "dstack-cli-work-"));
  cli = { home: server.where.home };
  client = Client.fromConfig({ env: { HOME: server.where.home } });
}, SLOW);

afterAll(async () => {
  await server?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("dstack apply, ps, stop, delete", () => {
  it(
    "apply -y -d submits a run that ps lists, as dstack's table and as JSON",
    async () => {
      const dir = await project({ ".dstack.yml": pendingTask("cli-one"), "main.py": "print('hi')\n" });
      const r = await dstack(["apply", "-y", "-d"], { ...cli, cwd: dir });
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^ Project\s+main$/m);
      expect(r.stdout).toMatch(/^ Retry policy\s+no-capacity for 1h$/m);
      expect(r.stdout).toContain("Run cli-one submitted, detaching...");

      const ps = await dstack(["ps"], cli);
      expect(ps.code).toBe(0);
      expect(ps.stdout).toMatch(/^ NAME\s+BACKEND\s+RESOURCES\s+PRICE\s+STATUS\s+SUBMITTED$/m);
      expect(ps.stdout).toMatch(/^ cli-one\s+-\s+-\s+-\s+(submitted|pending|retrying)\s+/m);

      const runs = await psJson();
      const one = runs.find((x) => x.runSpec.runName === "cli-one");
      expect(one?.status).toMatch(/^RUN_STATUS_(SUBMITTED|PENDING)$/);
    },
    SLOW,
  );

  it(
    "apply without -y where nobody can answer fails with exit 2 and submits nothing",
    async () => {
      const dir = await project({ ".dstack.yml": pendingTask("cli-ask") });
      const r = await dstack(["apply"], { ...cli, cwd: dir });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/Submit the run cli-ask: confirmation needed, but standard input is not a terminal\. Pass -y/);
      expect((await psJson()).map((x) => x.runSpec.runName)).not.toContain("cli-ask");
    },
    SLOW,
  );

  it("reports a bad configuration as file:line:column with exit 2", async () => {
    const dir = await project({ "bad.dstack.yml": "type: task\ncommands: [echo]\nresources:\n  gpu: A100:80GB:lots\n" });
    const r = await dstack(["apply", "-f", "bad.dstack.yml", "-y"], { ...cli, cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^bad\.dstack\.yml:4:\d+:/);
    expect(r.stderr).not.toMatch(NO_STACK);
  });

  it(
    "stop ends a run (ps -a shows it stopped); delete removes finished runs and refuses active ones",
    async () => {
      const dir = await project({ ".dstack.yml": pendingTask("cli-stop") });
      expect((await dstack(["apply", "-y", "-d"], { ...cli, cwd: dir })).code).toBe(0);

      const early = await dstack(["delete", "cli-stop", "-y"], cli);
      expect(early.code).toBe(1);
      expect(early.stderr).toMatch(/Run 'cli-stop' is \w+; only finished runs can be deleted\. Stop it first with `dstack stop cli-stop`/);

      const noYes = await dstack(["stop", "cli-stop"], cli);
      expect(noYes.code).toBe(2);
      const stop = await dstack(["stop", "cli-stop", "-y"], cli);
      expect(stop.stdout).toBe("Stopped\n");
      expect(stop.code).toBe(0);
      await untilFinished("cli-stop");

      const ps = await dstack(["ps", "-a"], cli);
      expect(ps.stdout).toMatch(/^ cli-stop\s+-\s+-\s+-\s+stopped\s+/m);
      expect((await psJson()).find((x) => x.runSpec.runName === "cli-stop")?.status).toBe("RUN_STATUS_TERMINATED");
      // Without -a, a finished run shows only when nothing is active; cli-one still is.
      expect((await dstack(["ps"], cli)).stdout).not.toMatch(/cli-stop/);

      const del = await dstack(["delete", "cli-stop", "-y"], cli);
      expect(del.stdout).toBe("Run cli-stop deleted\n");
      expect(del.code).toBe(0);
      expect((await psJson()).map((x) => x.runSpec.runName)).not.toContain("cli-stop");

      const missing = await dstack(["stop", "no-such-run", "-y"], cli);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toBe("Run 'no-such-run' does not exist in project 'main'. List runs with `dstack ps -a`.\n");
    },
    SLOW,
  );

  it(
    "apply attaches; Ctrl-C detaches, says how to come back, exits 0, and the run goes on",
    async () => {
      const dir = await project({ ".dstack.yml": pendingTask("cli-attach") });
      const run = startCli(["apply", "-y"], { ...cli, cwd: dir });
      await waitForOutput(run, (out) => out.includes("Run cli-attach submitted. Attaching"));
      run.child.kill("SIGINT");
      const r = await run.done;
      expect(r.code).toBe(0);
      expect(r.stderr).toContain("Detached from cli-attach; the run goes on.");
      expect(r.stderr).toContain("dstack attach cli-attach");
      expect(r.stderr).toContain("dstack logs -f cli-attach");
      expect(isRunFinished(await client.runs.get("cli-attach"))).toBe(false);

      // The run has no logs yet (no agent ran it): logs prints nothing and succeeds.
      const logs = await dstack(["logs", "cli-attach"], cli);
      expect(logs).toEqual({ code: 0, stdout: "", stderr: "" });

      // Reattached, it follows the run to its end: stopped by the user → exit 1 and says so.
      const again = startCli(["attach", "cli-attach"], cli);
      await waitForOutput(again, (_out, err) => err.includes("Attaching to cli-attach"));
      await client.runs.stop("cli-attach");
      const end = await again.done;
      expect(end.stderr).toMatch(/^Stopped$/m);
      expect(end.code).toBe(1);
      const finished = await dstack(["attach", "cli-attach"], cli);
      expect(finished.code).toBe(1);
      expect(finished.stderr).toMatch(/Run 'cli-attach' has already finished \(stopped\)/);
    },
    SLOW,
  );
});

describe("logs", () => {
  /**
   * No agent runs jobs here, so the test stores log entries the way the server does when a
   * runner sends them: JSON lines per job submission under the server dir (services/logs.ts).
   */
  async function storeLogs(submissionId: string, stream: "job" | "runner", entries: [number, "stdout" | "stderr" | "runner", string][]): Promise<void> {
    const dir = join(server.where.serverDir, "logs", submissionId);
    await mkdir(dir, { recursive: true });
    const lines = entries.map(([t, s, m], i) => JSON.stringify({ q: i + 1, t, s, m: Buffer.from(m).toString("base64") }) + "\n");
    await writeFile(join(dir, `${stream}.jsonl`), lines.join(""));
  }

  it(
    "logs prints the stored output (stdout to stdout, stderr to stderr), honours --since and --diagnose; -f follows to the run's end",
    async () => {
      const dir = await project({ ".dstack.yml": pendingTask("cli-logs") });
      expect((await dstack(["apply", "-y", "-d"], { ...cli, cwd: dir })).code).toBe(0);
      const submission = (await client.runs.get("cli-logs")).latestJobSubmission!.id;
      const t0 = Date.parse("2024-09-24T15:30:00Z");
      await storeLogs(submission, "job", [
        [t0, "stdout", "epoch 1\n"],
        [t0 + 1000, "stderr", "warning: slow\n"],
        [t0 + 2000, "stdout", "epoch 2\n"],
      ]);
      await storeLogs(submission, "runner", [[t0, "runner", "runner: pulling image\n"]]);

      expect(await dstack(["logs", "cli-logs"], cli)).toEqual({ code: 0, stdout: "epoch 1\nepoch 2\n", stderr: "warning: slow\n" });
      expect(await dstack(["logs", "cli-logs", "--since", "2024-09-24T15:30:01Z"], cli)).toEqual({ code: 0, stdout: "epoch 2\n", stderr: "warning: slow\n" });
      expect((await dstack(["logs", "cli-logs", "-d"], cli)).stdout).toBe("runner: pulling image\n");
      const badSince = await dstack(["logs", "cli-logs", "--since", "last tuesday"], cli);
      expect(badSince.code).toBe(2);

      // -f prints what is stored, then waits for the run (retrying) until it is stopped.
      const follow = startCli(["logs", "-f", "cli-logs"], cli);
      await waitForOutput(follow, (out) => out.includes("epoch 2"));
      await client.runs.stop("cli-logs");
      expect(await follow.done).toEqual({ code: 0, stdout: "epoch 1\nepoch 2\n", stderr: "warning: slow\n" });
    },
    SLOW,
  );
});

describe("code upload", () => {
  it(
    "uploads the working tree without what .gitignore/.dstackignore exclude; the same tree gives the same hash",
    async () => {
      const files = {
        ".dstack.yml": pendingTask("cli-code"),
        ".gitignore": "*.bin\n",
        ".dstackignore": "data/\n",
        "main.py": "print('train')\n",
        "weights.bin": randomBytes(200_000),
        "data/set.csv": randomBytes(200_000),
      };
      const dir = await project(files);
      // Ignored files are far above the 64 KB limit: the upload only fits because they are left out.
      const a = await dstack(["apply", "-y", "-d", "-n", "cli-code-a"], { ...cli, cwd: dir });
      expect(a.stderr).toBe("");
      expect(a.code).toBe(0);

      // A copy elsewhere with different ignored content (and another run name): the same code.
      const copy = await project({});
      await cp(dir, copy, { recursive: true });
      await writeFile(join(copy, "weights.bin"), randomBytes(1000));
      await rm(join(copy, "data"), { recursive: true });
      expect((await dstack(["apply", "-y", "-d", "-n", "cli-code-b"], { ...cli, cwd: copy })).code).toBe(0);

      await writeFile(join(copy, "main.py"), "print('changed')\n");
      expect((await dstack(["apply", "-y", "-d", "-n", "cli-code-c"], { ...cli, cwd: copy })).code).toBe(0);

      const hashes = Object.fromEntries((await psJson()).map((x) => [x.runSpec.runName, x.runSpec.repoCodeHash]));
      expect(hashes["cli-code-a"]).toMatch(/^[0-9a-f]{64}$/);
      expect(hashes["cli-code-b"]).toBe(hashes["cli-code-a"]);
      expect(hashes["cli-code-c"]).not.toBe(hashes["cli-code-a"]);
      // And it is the archive the client library builds for the same tree.
      expect((await buildCodeArchive(dir)).hash).toBe(hashes["cli-code-a"]);
      await client.runs.stop(["cli-code-a", "cli-code-b", "cli-code-c"], true);
    },
    SLOW,
  );

  it(
    "refuses code above the server's limit, naming the biggest files, and submits nothing",
    async () => {
      const dir = await project({ ".dstack.yml": pendingTask("cli-big"), "model.safetensors": randomBytes(150_000), "notes.md": "small\n" });
      const r = await dstack(["apply", "-y", "-d"], { ...cli, cwd: dir });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/above the server's upload limit of 64KB/);
      expect(r.stderr).toMatch(/146\.\dKB\s+model\.safetensors/);
      expect(r.stderr).toMatch(/\.gitignore or \.dstackignore/);
      expect(r.stderr).not.toMatch(NO_STACK);
      expect((await psJson()).map((x) => x.runSpec.runName)).not.toContain("cli-big");
    },
    SLOW,
  );
});

describe("secrets, projects, fleets, offers", () => {
  it(
    "secret set, list, delete",
    async () => {
      expect(await dstack(["secret", "set", "hf_token", "s3cr3t"], cli)).toEqual({ code: 0, stdout: "OK\n", stderr: "" });
      const list = await dstack(["secret", "list"], cli);
      expect(list.stdout).toMatch(/^ NAME\s+VALUE\n hf_token\s+\*{6}\n$/);
      expect(list.stdout).not.toContain("s3cr3t");
      expect((await dstack(["secret", "delete", "hf_token"], cli)).code).toBe(2);
      expect((await dstack(["secret", "delete", "hf_token", "-y"], cli)).code).toBe(0);
      expect((await dstack(["secret"], cli)).stdout).toBe(" NAME  VALUE\n");
    },
    SLOW,
  );

  it("project list shows the project the server configured, as the default", async () => {
    const r = await dstack(["project", "list"], cli);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ PROJECT\s+URL\s+DEFAULT\n main\s+http:\/\/127\.0\.0\.1:\d+\/?\s+✓\n$/);
  });

  it(
    "fleet: apply a fleet configuration, list it, show it as JSON, delete it",
    async () => {
      const dir = await project({ "fleet.dstack.yml": "type: fleet\nname: cli-fleet\nnodes: 0..2\n" });
      const applied = await dstack(["apply", "-f", "fleet.dstack.yml", "-y"], { ...cli, cwd: dir });
      expect(applied.stderr).toBe("");
      expect(applied.stdout).toContain("Fleet cli-fleet created.");
      const list = await dstack(["fleet"], cli);
      expect(list.stdout).toMatch(/^ NAME\s+NODES\s+GPU\s+SPOT\s+BACKEND\s+PRICE\s+STATUS\s+CREATED$/m);
      expect(list.stdout).toMatch(/^ cli-fleet\s+0\.\.2\s+on-demand\s+\*\s+(active|submitted)\s+/m);
      const get = await dstack(["fleet", "get", "cli-fleet", "--json"], cli);
      expect(JSON.parse(get.stdout)).toMatchObject({ name: "cli-fleet", projectName: "main" });
      expect((await dstack(["fleet", "delete", "cli-fleet", "-y"], cli)).stdout).toBe("Fleet cli-fleet deleted\n");
      const gone = await dstack(["fleet", "get", "nope"], cli);
      expect(gone.code).toBe(1);
      expect(gone.stderr).toMatch(/Fleet 'nope' does not exist/);
    },
    SLOW,
  );

  it(
    "offer lists nothing on a server without instances, as text and JSON, and rejects a bad --gpu",
    async () => {
      const r = await dstack(["offer", "--gpu", "A100"], cli);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/No matching instance offers available/);
      const j = await dstack(["offer", "--json"], cli);
      expect(JSON.parse(j.stdout)).toMatchObject({ project: "main", offers: [] });
      const bad = await dstack(["offer", "--gpu", "A100::2"], cli);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/Invalid --gpu 'A100::2'/);
    },
    SLOW,
  );
});

describe("configuration from the environment", () => {
  it(
    "DSTACK_PROJECT (with DSTACK_SERVER_URL/DSTACK_TOKEN) or --project selects another project",
    async () => {
      await client.projects.create("cli-other");
      const other = { DSTACK_SERVER_URL: server.url, DSTACK_TOKEN: server.adminToken, DSTACK_PROJECT: "cli-other" };
      const dir = await project({ ".dstack.yml": pendingTask("cli-in-other") });
      // No config file at all: the variables are enough.
      const bare = await mkdtemp(join(work, "home-"));
      const r = await dstack(["apply", "-y", "-d"], { home: bare, cwd: dir, env: other });
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect((await psJson([], { home: bare, env: other })).map((x) => x.runSpec.runName)).toEqual(["cli-in-other"]);
      expect((await psJson()).map((x) => x.runSpec.runName)).not.toContain("cli-in-other");

      // DSTACK_PROJECT naming a project the config file does not know, without a URL, is explained.
      const unknown = await dstack(["ps"], { ...cli, env: { DSTACK_PROJECT: "cli-other" } });
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toMatch(/Project 'cli-other' is not configured .*dstack project add/);

      // After `project add` (not made the default) --project selects it.
      const add = await dstack(["project", "add", "--name", "cli-other", "--url", server.url, "--token", server.adminToken, "-n"], cli);
      expect(add.stderr).toBe("");
      expect(add.code).toBe(0);
      expect((await dstack(["project", "list"], cli)).stdout).toMatch(/^ main\s+\S+\s+✓$/m);
      expect((await psJson(["--project", "cli-other"])).map((x) => x.runSpec.runName)).toEqual(["cli-in-other"]);
      await client.runs.stop("cli-in-other", true).catch(() => undefined);
    },
    SLOW,
  );

  it(
    "a wrong DSTACK_TOKEN gives the server's message and exit 1; an unreachable server says so",
    async () => {
      const bad = await dstack(["ps"], { ...cli, env: { DSTACK_TOKEN: "not-a-token" } });
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^Invalid or missing token\./);
      expect(bad.stderr).not.toMatch(NO_STACK);
      const down = await dstack(["ps"], { ...cli, env: { DSTACK_SERVER_URL: `http://127.0.0.1:${await freePort()}` } });
      expect(down.code).toBe(1);
      expect(down.stderr).toMatch(/^Cannot reach the dstack server at http:\/\/127\.0\.0\.1:\d+ \(connection refused\)/);
    },
    SLOW,
  );
});

describe("dstack server", () => {
  it(
    "runs the server in the foreground, passing arguments through, and stops with it on SIGTERM (exit 0)",
    async () => {
      const where = await createServerEnv("sqlite");
      try {
        const [port, agentPort] = [await freePort(), await freePort()];
        const run = startCli(["server", "--port", String(port), "--agent-port", String(agentPort), "--log-level", "warn"], { home: where.home, env: { ...where.env, DSTACK_SERVER_NO_LOCAL_FLEET: "1" } });
        await waitForOutput(run, (out) => /The server is running at http:\/\/127\.0\.0\.1:(\d+)/.test(out));
        expect(run.stdout()).toContain(`127.0.0.1:${port}`);
        // The server it started wrote the CLI config; the CLI can use it at once.
        expect((await dstack(["ps"], { home: where.home })).code).toBe(0);
        run.child.kill("SIGTERM");
        expect((await run.done).code).toBe(0);
      } finally {
        await where.cleanup();
      }
    },
    SLOW,
  );
});
