// diffRunSpecs: which re-applies dstack updates in place (services by rolling deployment,
// any run for priority, dev environments for inactivity_duration) and what it lists as changed.
import { parseConfiguration, type RunConfig } from "@dstack/proto";
import { describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { DEV_ENVIRONMENT_KEEPALIVE, buildJobSpecs, diffRunSpecs, type RunSpecInput } from "./runs.js";

const spec = (yaml: string, extra: Partial<RunSpecInput> = {}): RunSpecInput => ({ configuration: parseConfiguration(yaml, "x.yml") as RunConfig, ...extra });
const svc = (cmd: string, more = "") => `type: service\nname: s\nport: 8000\ncommands: [${JSON.stringify(cmd)}]\n${more}`;
const task = (cmd: string, more = "") => `type: task\nname: t\ncommands: [${JSON.stringify(cmd)}]\n${more}`;

describe("diffRunSpecs", () => {
  it("nothing changed: no fields, updatable", () => {
    expect(diffRunSpecs(spec(svc("a")), spec(svc("a")))).toEqual({ fields: [], updatable: true });
    expect(diffRunSpecs(spec(task("a")), spec(task("a")))).toEqual({ fields: [], updatable: true });
  });

  it("a service takes new commands, env, image, resources and code in place", () => {
    expect(diffRunSpecs(spec(svc("a")), spec(svc("b")))).toEqual({ fields: ["configuration.commands"], updatable: true });
    expect(diffRunSpecs(spec(svc("a")), spec(svc("a", "image: x:1\nenv: [A=1]\n")))).toEqual({ fields: ["configuration.env", "configuration.image"], updatable: true });
    expect(diffRunSpecs(spec(svc("a"), { repoCodeHash: "aa" }), spec(svc("a"), { repoCodeHash: "bb" }))).toEqual({ fields: ["repo_code_hash"], updatable: true });
    // -e values count as the configuration's env
    expect(diffRunSpecs(spec(svc("a"), { env: { A: "1" } }), spec(svc("a"), { env: { A: "2" } }))).toEqual({ fields: ["configuration.env"], updatable: true });
  });

  it("a task takes only priority in place; other changes need a stop", () => {
    expect(diffRunSpecs(spec(task("a")), spec(task("a", "priority: 5\n")))).toEqual({ fields: ["configuration.priority"], updatable: true });
    expect(diffRunSpecs(spec(task("a")), spec(task("b")))).toEqual({ fields: ["configuration.commands"], updatable: false });
    expect(diffRunSpecs(spec(task("a"), { repoCodeHash: "aa" }), spec(task("a"), { repoCodeHash: "bb" }))).toEqual({ fields: ["repo_code_hash"], updatable: false });
  });

  it("a service's port may change; its repo id or type may not", () => {
    expect(diffRunSpecs(spec(svc("a")), spec(svc("a").replace("8000", "9000"))).updatable).toBe(true);
    expect(diffRunSpecs(spec(svc("a"), { repoId: "r1" }), spec(svc("a"), { repoId: "r2" }))).toEqual({ fields: ["repo_id"], updatable: false });
    expect(diffRunSpecs(spec(svc("a")), spec(task("a").replace("name: t", "name: s")))).toMatchObject({ updatable: false });
  });
});

describe("DSTACK_SERVER_RUNNER_DIAL_TIMEOUT", () => {
  it("defaults to dstack's 600 s, takes seconds, and names itself when bad", async () => {
    const { envRunnerDialTimeoutS } = await import("./jobs.js");
    expect(envRunnerDialTimeoutS({})).toBe(600);
    expect(envRunnerDialTimeoutS({ DSTACK_SERVER_RUNNER_DIAL_TIMEOUT: "30" })).toBe(30);
    expect(() => envRunnerDialTimeoutS({ DSTACK_SERVER_RUNNER_DIAL_TIMEOUT: "ten" })).toThrow(/DSTACK_SERVER_RUNNER_DIAL_TIMEOUT.*'ten' is not a positive number of seconds/);
    expect(() => envRunnerDialTimeoutS({ DSTACK_SERVER_RUNNER_DIAL_TIMEOUT: "0" })).toThrow(/DSTACK_SERVER_RUNNER_DIAL_TIMEOUT/);
  });
});

describe("dev environments", () => {
  const commandsOf = (yaml: string) => buildJobSpecs("dev1", parseConfiguration(yaml, "x.yml") as RunConfig)[0]!.commands;

  it("run setup and init, then print how to open them (in the run's logs), then stay up", () => {
    const cmds = commandsOf("type: dev-environment\nimage: ubuntu\nide: vscode\ninit: [pip install x]\n");
    expect(cmds[0]).toBe("pip install x");
    expect(cmds.at(-1)).toBe(DEV_ENVIRONMENT_KEEPALIVE);
    expect(execFileSync("sh", ["-c", cmds[1]!], { encoding: "utf8" })).toBe(
      "Open it in VS Code:\n  vscode://vscode-remote/ssh-remote+dev1/workflow\n\nConnect with SSH: ssh dev1\nThe dev environment runs until it is stopped: dstack stop dev1\n",
    );
  });

  it("link each IDE to the working directory; without an IDE only SSH is shown", () => {
    const greet = (yaml: string) => execFileSync("sh", ["-c", commandsOf(`type: dev-environment\nimage: ubuntu\n${yaml}`).at(-2)!], { encoding: "utf8" });
    expect(greet("ide: cursor\nworking_dir: src\n")).toContain("Open it in Cursor:\n  cursor://vscode-remote/ssh-remote+dev1/workflow/src\n");
    expect(greet("ide: windsurf\nworking_dir: /opt/it's here\n")).toContain("windsurf://vscode-remote/ssh-remote+dev1/opt/it's here\n");
    expect(greet("ide: zed\n")).toContain("zed://ssh/dev1/workflow\n");
    // dstack's default image starts in its own working directory.
    expect(execFileSync("sh", ["-c", commandsOf("type: dev-environment\nide: vscode\n").at(-2)!], { encoding: "utf8" })).toContain("ssh-remote+dev1/dstack/run\n");
    expect(greet("")).toBe("Connect with SSH: ssh dev1\nThe dev environment runs until it is stopped: dstack stop dev1\n");
  });
});
