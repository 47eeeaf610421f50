// `dstack ui` through the real binary: on a pseudo-terminal (node-pty) against a real server it
// draws the runs table and quits on q with exit 0, giving the screen back; without a terminal it
// refuses with exit 2.
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { DSTACK_BIN, dstack, type CliRun } from "./run-cli.js";

const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));
// eslint-disable-next-line no-control-regex
const plain = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");

let server: TestServer & { where: ServerEnv };
let cli: CliRun;

beforeAll(async () => {
  server = await startTestServer("sqlite");
  cli = { home: server.where.home };
  // No fleet: the run ends "no fleets" at once, which is all the table needs.
  const r = await dstack(["apply", "-f", join(REPO, "examples/hello.dstack.yml"), "-y", "-d", "-n", "ui-hello"], cli);
  expect(r.code, r.stderr).toBe(0);
});

afterAll(async () => {
  await server?.stop();
});

describe("dstack ui", () => {
  it("needs a terminal: exit 2 and a pointer to ps -w", async () => {
    const r = await dstack(["ui"], cli);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^dstack ui needs a terminal; use dstack ps -w/);
    expect(r.stdout).toBe("");
  });

  it("on a terminal: draws the project's runs live, and q quits with exit 0 and the screen given back", async () => {
    const pty = await import("node-pty");
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("DSTACK_") && k !== "FORCE_COLOR") env[k] = v;
    const term = pty.spawn(process.execPath, [DSTACK_BIN, "ui"], { cols: 120, rows: 24, cwd: REPO, env: { ...env, HOME: server.where.home, NO_COLOR: "1", TERM: "xterm-256color" } });
    let out = "";
    term.onData((d) => (out += d));
    const exited = new Promise<number>((ok) => term.onExit(({ exitCode }) => ok(exitCode)));
    try {
      const until = async (check: (s: string) => boolean, what: string) => {
        const end = Date.now() + 20_000;
        while (!check(plain(out))) {
          if (Date.now() > end) throw new Error(`no ${what} on the screen:\n${plain(out)}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      await until((s) => /ui-hello/.test(s) && /no fleets/.test(s), "run row");
      const screen = plain(out);
      expect(screen).toContain(`${server.url} · project main`);
      expect(screen).toMatch(/NAME\s+BACKEND\s+RESOURCES\s+PRICE\s+STATUS\s+SUBMITTED/);
      // A run submitted while the dashboard is open appears on its own.
      expect((await dstack(["apply", "-f", join(REPO, "examples/hello.dstack.yml"), "-y", "-d", "-n", "ui-later"], cli)).code).toBe(0);
      await until((s) => /ui-later/.test(s), "new run");
      term.write("q");
      expect(await exited).toBe(0);
      expect(out).toContain("\x1b[?1049h");
      expect(out.lastIndexOf("\x1b[?1049l")).toBeGreaterThan(out.lastIndexOf("ui-later"));
    } finally {
      term.kill();
    }
  }, 45_000);
});
