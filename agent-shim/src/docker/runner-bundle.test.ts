import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseRecord, taskLabels } from "./labels.js";
import { agentUrlForContainer, checkRunnerBundle, defaultRunnerBundleDir, writeTaskDir } from "./runner-bundle.js";

describe("runner bundle, task folder and labels", () => {
  it("defaults to $DSTACK_RUNNER_BUNDLE, else <repo>/build/runner-bundle", () => {
    expect(defaultRunnerBundleDir({ DSTACK_RUNNER_BUNDLE: "/opt/rb" })).toBe("/opt/rb");
    expect(defaultRunnerBundleDir({})).toBe(join(process.cwd(), "build/runner-bundle"));
  });

  it("a missing bundle names the folder and the build command", () => {
    expect(() => checkRunnerBundle("/nonexistent/rb")).toThrow(/\/nonexistent\/rb is missing bin\/node, runner.js, lib\/ld-linux-x86-64.so.2; build it with `npm run build:runner`/);
  });

  it("bridge mode sends a loopback agent URL to host.docker.internal, keeping the TLS name", () => {
    expect(agentUrlForContainer("https://127.0.0.1:3001", true)).toEqual({ agentUrl: "https://host.docker.internal:3001", serverName: "127.0.0.1" });
    expect(agentUrlForContainer("https://localhost:3001", true)).toEqual({ agentUrl: "https://host.docker.internal:3001", serverName: "localhost" });
    expect(agentUrlForContainer("https://127.0.0.1:3001", false)).toEqual({ agentUrl: "https://127.0.0.1:3001" });
    expect(agentUrlForContainer("https://10.0.0.5:3001", true)).toEqual({ agentUrl: "https://10.0.0.5:3001" });
  });

  it("writes bootstrap.json 0600 in a 0700 task folder", () => {
    const dir = writeTaskDir(mkdtempSync(join(tmpdir(), "shim-")), "t1", { joinToken: "j", agentUrl: "https://x:1", caCertificatePem: "pem" });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, "bootstrap.json")).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(join(dir, "bootstrap.json"), "utf8"))).toEqual({ joinToken: "j", agentUrl: "https://x:1", caCertificatePem: "pem" });
  });

  it("labels round-trip the recovery record; foreign labels give null", () => {
    const rec = { v: 1 as const, containerName: "c", imageName: "i", gpuIds: ["GPU-a"], networkMode: "bridge" as const, ports: [80], runner: true, sshKeys: ["ssh-ed25519 AAAA k"], containerUser: "1000" };
    const l = taskLabels("inst", "t1", rec);
    expect(l["dstack.shim.instance-id"]).toBe("inst");
    expect(l["dstack.task.id"]).toBe("t1");
    expect(parseRecord(l)).toEqual(rec);
    expect(parseRecord({ "dstack.shim.task": "{bad" })).toBeNull();
    expect(parseRecord({})).toBeNull();
  });
});
