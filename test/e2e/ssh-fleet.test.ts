// SSH fleets end to end: two real OpenSSH servers on loopback ports stand for two hosts (the
// same machine and Docker engine behind both; each shim gets its own install dir). A REAL
// server provisions them over SSH from a fleet configuration: checks, bundle upload, one-time
// join token, shim started under a restart loop. Both instances become idle with host facts,
// a third host with a key the servers refuse fails with its own error, tasks run on each host,
// and deleting the fleet stops both shims and removes their install dirs.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, renameSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfiguration, type FleetConfig } from "@dstack/proto";
import { InstanceStatus, type Fleet } from "@dstack/proto/api";
import { Client } from "../../cli/src/index.js";
import { withSshKeys } from "../../cli/src/commands/fleet-apply.js";
import { buildRunnerBundle } from "../../scripts/build-runner-bundle.js";
import { buildShimBundle } from "../../scripts/build-shim-bundle.js";
import { dstack, startCli, waitForOutput, type CliRun } from "../cli/run-cli.js";
import { TEST_IMAGES, requireTestImages } from "../helpers/docker.js";
import { startTestServer, type ServerEnv, type TestServer, waitFleet } from "../helpers/server.js";
import { sshKeygen, startSshd, type Sshd } from "../helpers/sshd.js";

const SLOW = 300_000;

let work: string;
let server: TestServer & { where: ServerEnv };
let client: Client;
let cli: CliRun;
const sshds: Sshd[] = [];
const ports: number[] = [];


const shimProcesses = (dir: string): string => {
  try {
    return execFileSync("pgrep", ["-af", dir], { encoding: "utf8" }).trim();
  } catch {
    return ""; // pgrep exits 1 when nothing matches
  }
};

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  await buildRunnerBundle({ log: () => {} });
  await buildShimBundle({ log: () => {} });
  work = await mkdtemp(join(tmpdir(), "dstack-ssh-fleet-"));
  for (const k of ["host_key", "id_good", "id_bad"]) sshKeygen(join(work, k));
  execFileSync("sh", ["-c", `cp ${join(work, "id_good.pub")} ${join(work, "authorized_keys")}`]);
  for (let i = 0; i < 2; i++) {
    const sshd = await startSshd({ dir: work, hostKey: join(work, "host_key"), authorizedKeys: join(work, "authorized_keys") });
    sshds.push(sshd);
    ports.push(sshd.port);
  }
  server = await startTestServer("sqlite", { args: process.env.SSH_FLEET_DEBUG ? ["--log-level", "info"] : [] });
  client = Client.fromConfig({ env: { HOME: server.where.home } });
  cli = { home: server.where.home };
}, SLOW);

afterAll(async () => {
  await server?.stop();
  await Promise.all(sshds.map((s) => s.stop()));
  if (work) await rm(work, { recursive: true, force: true });
});

const fleetYaml = () =>
  [
    "type: fleet",
    "name: sshf",
    "ssh_config:",
    "  user: root",
    `  identity_file: ${join(work, "id_good")}`,
    "  hosts:",
    `    - hostname: 127.0.0.1`,
    `      port: ${ports[0]}`,
    `    - hostname: 127.0.0.1`,
    `      port: ${ports[1]}`,
    // Same sshd, but a key it does not accept: this host alone fails.
    `    - hostname: localhost`,
    `      port: ${ports[0]}`,
    `      identity_file: ${join(work, "id_bad")}`,
    "",
  ].join("\n");

const task = (name: string, commands: string[]) =>
  [`type: task`, `name: ${name}`, `image: ${TEST_IMAGES.busybox}`, `fleets: [sshf]`, `commands:`, ...commands.map((c) => `  - ${JSON.stringify(c)}`), ``].join("\n");

describe("SSH fleets", () => {
  let installDirs: string[] = [];

  it("dstack apply names the identity_file it cannot read, and the field", async () => {
    const dir = await mkdtemp(join(work, "cfg-"));
    const missing = join(work, "no-such-key");
    await writeFile(join(dir, "fleet.dstack.yml"), fleetYaml().replace(`      identity_file: ${join(work, "id_bad")}`, `      identity_file: ${missing}`));
    const r = await dstack(["apply", "-y", "-f", "fleet.dstack.yml"], { ...cli, cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`fleet.dstack.yml: ssh_config.hosts[2].identity_file: cannot read ${missing}: no such file`);
    await expect(client.fleets.get("sshf")).rejects.toThrow(/does not exist/);
  });

  it(
    "provisions each host over SSH: the good ones become idle with host facts, the refused one fails with its own error",
    async () => {
      // What `dstack apply` does: the CLI reads the keys; the server gets their contents.
      const config = withSshKeys(parseConfiguration(fleetYaml(), "fleet.dstack.yml") as FleetConfig, "fleet.dstack.yml", { cwd: work, env: process.env });
      const applied = await client.fleets.apply(config);
      // The server never reads identity_file paths: the key file is gone before it provisions
      // (and deletes) the hosts.
      renameSync(join(work, "id_good"), join(work, "id_good.moved"));
      // Keys are never returned, and are encrypted at rest.
      const ssh = applied.spec?.configuration?.sshConfig;
      expect(ssh?.identityFile).toBe(join(work, "id_good"));
      expect(ssh?.sshKey).toBeUndefined();
      expect(ssh?.hosts.map((h) => h.sshKey)).toEqual([undefined, undefined, undefined]);
      expect(JSON.stringify((await client.fleets.get("sshf")).spec)).not.toContain("PRIVATE KEY");
      expect(readFileSync(join(server.where.serverDir, "data", "sqlite.db")).includes("PRIVATE KEY")).toBe(false);
      const settled = (i: Fleet["instances"][number]) => i.status === InstanceStatus.IDLE || i.status === InstanceStatus.TERMINATED;
      const f = await waitFleet(client, server, "sshf", (f) => f.instances.length === 3 && f.instances.every(settled));
      const byHost = (n: number) => f.instances[n]!;
      expect(byHost(0).status).toBe(InstanceStatus.IDLE);
      expect(byHost(1).status).toBe(InstanceStatus.IDLE);
      expect(byHost(0).hostname).not.toBe("");
      expect(byHost(0).instanceType?.resources?.cpus ?? 1).toBeGreaterThan(0);
      expect(byHost(2).status).toBe(InstanceStatus.TERMINATED);
      expect(byHost(2).terminationReasonMessage).toBe(`SSH authentication refused for root@localhost:${ports[0]} (identity_file ${join(work, "id_bad")})`);
      installDirs = [byHost(0).id, byHost(1).id].map((id) => `/opt/dstack/shim-${id}`);
      for (const d of installDirs) {
        expect(existsSync(join(d, "home", "identity.json"))).toBe(true);
        expect(existsSync(join(d, "join-token"))).toBe(true);
        expect(shimProcesses(d)).toContain("shim.js");
        // The runner bundle is whole on the host (its PTY addon too), sharing the shim's Node by hard link.
        expect(existsSync(join(d, "runner-bundle", "node_modules", "node-pty", "build", "Release", "pty.node"))).toBe(true);
        expect(statSync(join(d, "runner-bundle", "bin", "node")).ino).toBe(statSync(join(d, "shim-bundle", "bin", "node")).ino);
      }

      // Applying the same configuration again leaves the set-up hosts alone.
      await client.fleets.apply(config);
      const again = await waitFleet(client, server, "sshf", (f) => f.instances.length === 3 && f.instances.every(settled));
      expect(again.instances.map((i) => i.id)).toEqual(f.instances.map((i) => i.id));
      expect(again.instances[0]!.status).toBe(InstanceStatus.IDLE);
    },
    SLOW,
  );

  it(
    "runs a task on each host",
    async () => {
      const a = await mkdtemp(join(work, "proj-a-"));
      const b = await mkdtemp(join(work, "proj-b-"));
      await writeFile(join(a, ".dstack.yml"), task("ssh-a", ["echo started-a", "sleep 600"]));
      await writeFile(join(b, ".dstack.yml"), task("ssh-b", ["echo hello-from-b"]));
      // A holds one host until stopped, so B must get the other one.
      const runA = startCli(["apply", "-y"], { ...cli, cwd: a });
      await waitForOutput(runA, (out) => out.includes("started-a"));
      const rb = await dstack(["apply", "-y"], { ...cli, cwd: b });
      expect(rb.stdout).toContain("hello-from-b");
      expect(rb.code).toBe(0);
      await dstack(["stop", "-y", "ssh-a"], cli);
      await runA.done;
      const instances = await Promise.all(["ssh-a", "ssh-b"].map(async (n) => (await client.runs.get(n)).latestJobSubmission?.jobProvisioningData?.instanceName));
      expect(new Set(instances)).toEqual(new Set(["sshf-0", "sshf-1"]));
    },
    SLOW,
  );

  it(
    "fleet delete stops both shims and removes them from the hosts",
    async () => {
      await client.fleets.delete("sshf");
      for (const d of installDirs) {
        for (;;) {
          if (!existsSync(d) && shimProcesses(d) === "") break;
          if (process.env.SSH_FLEET_DEBUG) console.error(server.stderr().slice(-3000), shimProcesses(d));
          await new Promise((r) => setTimeout(r, 500));
        }
        expect(existsSync(d)).toBe(false);
        expect(shimProcesses(d)).toBe("");
      }
    },
    SLOW,
  );
});
