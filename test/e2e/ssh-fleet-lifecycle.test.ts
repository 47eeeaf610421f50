// SSH fleets over time, through the real CLI: `dstack apply` of a two-host fleet shows each
// host's provisioning steps until both are idle; `dstack fleet get` (and --json) shows each host.
// A host's shim frozen (SIGSTOP) goes unreachable; killed, its restart loop starts it again and
// the instance comes back by itself, and a task still runs there. A host removed from the YAML and applied
// again leaves the fleet and is cleaned (shim stopped, install dir gone).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InstanceStatus } from "@dstack/proto/api";
import { Client } from "../../cli/src/index.js";
import { buildRunnerBundle } from "../../scripts/build-runner-bundle.js";
import { buildShimBundle } from "../../scripts/build-shim-bundle.js";
import { dstack, startCli, waitForOutput } from "../cli/run-cli.js";
import { TEST_IMAGES, requireTestImages } from "../helpers/docker.js";
import { startTestServer, type ServerEnv, type TestServer, waitFleet } from "../helpers/server.js";
import { sshKeygen, startSshd, type Sshd } from "../helpers/sshd.js";

const SLOW = 180_000;

let work: string;
let server: TestServer & { where: ServerEnv };
let client: Client;
let cli: { home: string };
const sshds: Sshd[] = [];
const ports: number[] = [];

const pgrep = (pattern: string): string => {
  try {
    return execFileSync("pgrep", ["-f", pattern], { encoding: "utf8" }).trim();
  } catch {
    return ""; // pgrep exits 1 when nothing matches
  }
};

const pgrepChildren = (ppid: string): string => {
  try {
    return execFileSync("pgrep", ["-P", ppid], { encoding: "utf8" }).trim();
  } catch {
    return "";
  }
};


const fleetYaml = (hostPorts: number[]) =>
  ["type: fleet", "name: sshl", "ssh_config:", "  user: root", "  identity_file: ~/.ssh/id_fleet", "  hosts:", ...hostPorts.flatMap((p) => ["    - hostname: 127.0.0.1", `      port: ${p}`]), ""].join("\n");

let proj: string;

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  await buildRunnerBundle({ log: () => {} });
  await buildShimBundle({ log: () => {} });
  work = await mkdtemp(join(tmpdir(), "dstack-ssh-life-"));
  sshKeygen(join(work, "host_key"));
  server = await startTestServer("sqlite", { args: process.env.SSH_FLEET_DEBUG ? ["--log-level", "info"] : [] });
  client = Client.fromConfig({ env: { HOME: server.where.home } });
  cli = { home: server.where.home };
  // The key lives in the CLI user's ~/.ssh: `~` is the user's home on the user's machine.
  mkdirSync(join(server.where.home, ".ssh"), { recursive: true });
  sshKeygen(join(server.where.home, ".ssh", "id_fleet"));
  execFileSync("cp", [join(server.where.home, ".ssh", "id_fleet.pub"), join(work, "authorized_keys")]);
  for (let i = 0; i < 2; i++) {
    const sshd = await startSshd({ dir: work, hostKey: join(work, "host_key"), authorizedKeys: join(work, "authorized_keys") });
    sshds.push(sshd);
    ports.push(sshd.port);
  }
  proj = await mkdtemp(join(work, "proj-"));
}, SLOW);

afterAll(async () => {
  try {
    await client?.fleets.delete("sshl");
    for (let i = 0; i < 60 && dirs.some((d) => existsSync(d)); i++) await new Promise((r) => setTimeout(r, 500));
  } catch {
    // nothing to delete when setup failed
  }
  await server?.stop();
  await Promise.all(sshds.map((s) => s.stop()));
  if (work) await rm(work, { recursive: true, force: true });
}, SLOW);

let dirs: string[] = [];

describe("SSH fleet lifecycle", () => {

  it(
    "dstack apply shows each host's provisioning until both are idle; fleet get shows each host",
    async () => {
      await writeFile(join(proj, "fleet.dstack.yml"), fleetYaml(ports));
      const r = await dstack(["apply", "-y", "-f", "fleet.dstack.yml"], { ...cli, cwd: proj });
      expect(r.code).toBe(0);
      for (const p of ports) {
        const host = `root@127.0.0.1:${p}`;
        const lines = r.stdout.split("\n").filter((l) => l.trim().startsWith(`${host} `)).map((l) => l.trim().slice(host.length).trim());
        // Progress lines in order, ending idle (polling may skip a fast step, never reorders).
        const order = ["connecting", "checking the host", "uploading the shim", "starting the shim", "waiting for the shim", "idle"];
        const idx = lines.map((l) => order.indexOf(l));
        expect(idx.every((n) => n >= 0)).toBe(true);
        expect([...idx].sort((a, b) => a - b)).toEqual(idx);
        expect(lines.at(-1)).toBe("idle");
      }
      expect(r.stdout).toContain("All 2 hosts are ready.");

      const get = await dstack(["fleet", "get", "sshl"], cli);
      for (const p of ports) expect(get.stdout).toMatch(new RegExp(`instance=\\d root@127\\.0\\.0\\.1:${p}\\s.*idle`));
      const json = JSON.parse((await dstack(["fleet", "get", "sshl", "--json"], cli)).stdout) as { instances: { sshHost: string; status: string }[] };
      expect(json.instances.map((i) => [i.sshHost, i.status])).toEqual(ports.map((p) => [`root@127.0.0.1:${p}`, "INSTANCE_STATUS_IDLE"]));
      // The key was read by the CLI; the server shows where it came from, never the key.
      expect(JSON.stringify(json)).not.toContain("PRIVATE KEY");
      dirs = (await client.fleets.get("sshl")).instances.map((i) => `/opt/dstack/shim-${i.id}`);
    },
    SLOW,
  );

  it(
    "a killed shim is restarted: the instance goes unreachable, comes back, and runs a task",
    async () => {
      // The shim is the restart loop's child (supervisor.pid names the loop).
      const shimOf = (dir: string) => pgrepChildren(readFileSync(join(dir, "supervisor.pid"), "utf8").trim());
      const before = shimOf(dirs[0]!);
      expect(before).toMatch(/^\d+$/);
      // Frozen, it misses heartbeats: the instance turns unreachable (and keeps its status).
      process.kill(Number(before), "SIGSTOP");
      const lost = await waitFleet(client, server, "sshl", (f) => f.instances[0]!.unreachable);
      expect(lost.instances[0]!.status).toBe(InstanceStatus.IDLE);
      // Killed, it is started again by the loop and links back by itself.
      process.kill(Number(before), "SIGKILL");
      const back = await waitFleet(client, server, "sshl", (f) => !f.instances[0]!.unreachable && f.instances[0]!.status === InstanceStatus.IDLE);
      const after = shimOf(dirs[0]!);
      expect(after).toMatch(/^\d+$/);
      expect(after).not.toBe(before);

      // Tasks run on both hosts, the restarted one included: one holds a host while the other runs.
      const hold = await mkdtemp(join(work, "hold-"));
      await writeFile(join(hold, ".dstack.yml"), ["type: task", "name: hold", `image: ${TEST_IMAGES.busybox}`, "fleets: [sshl]", "commands:", '  - "echo holding"', '  - "sleep 300"', ""].join("\n"));
      const task = await mkdtemp(join(work, "task-"));
      await writeFile(join(task, ".dstack.yml"), ["type: task", "name: after-restart", `image: ${TEST_IMAGES.busybox}`, "fleets: [sshl]", "commands:", '  - "echo back-on-host"', ""].join("\n"));
      const holding = startCli(["apply", "-y"], { ...cli, cwd: hold });
      await waitForOutput(holding, (out) => out.includes("holding"));
      const r = await dstack(["apply", "-y"], { ...cli, cwd: task });
      expect(r.stdout).toContain("back-on-host");
      await dstack(["stop", "-y", "hold"], cli);
      await holding.done;
      const on = await Promise.all(["hold", "after-restart"].map(async (n) => (await client.runs.get(n)).latestJobSubmission?.jobProvisioningData?.instanceName));
      expect(new Set(on)).toEqual(new Set(back.instances.map((i) => i.name)));
      expect(r.code).toBe(0);
    },
    SLOW,
  );

  it(
    "a host whose install differs from this server's is reinstalled in place, keeping its instance and identity",
    async () => {
      const dir = dirs[0]!;
      const identity = readFileSync(join(dir, "home", "identity.json"), "utf8");
      const shimBefore = pgrepChildren(readFileSync(join(dir, "supervisor.pid"), "utf8").trim());
      const id = (await client.fleets.get("sshl")).instances[0]!.id;
      // What an older server (other bundles) would have left.
      await writeFile(join(dir, "install.sha256"), "0".repeat(64) + "\n");
      const r = await dstack(["apply", "-y", "-f", "fleet.dstack.yml"], { ...cli, cwd: proj });
      expect(r.code).toBe(0);
      for (let i = 0; readFileSync(join(dir, "install.sha256"), "utf8").startsWith("0000") && i < 100; i++) await new Promise((r) => setTimeout(r, 200));
      expect(readFileSync(join(dir, "install.sha256"), "utf8")).toMatch(/^[0-9a-f]{64}\n$/);
      expect(readFileSync(join(dir, "install.sha256"), "utf8").startsWith("0000")).toBe(false);
      const f = await waitFleet(client, server, "sshl", (f) => {
        const pid = existsSync(join(dir, "supervisor.pid")) ? pgrepChildren(readFileSync(join(dir, "supervisor.pid"), "utf8").trim()) : "";
        return /^\d+$/.test(pid) && pid !== shimBefore && f.instances[0]!.status === InstanceStatus.IDLE && !f.instances[0]!.unreachable;
      });
      expect(f.instances[0]!.id).toBe(id);
      expect(readFileSync(join(dir, "home", "identity.json"), "utf8")).toBe(identity);
    },
    SLOW,
  );

  it(
    "a host behind a proxy_jump is provisioned through it, with the jump host's key read by the CLI",
    async () => {
      const jumpKey = join(server.where.home, ".ssh", "id_jump");
      sshKeygen(jumpKey);
      await writeFile(join(work, "authorized_keys"), readFileSync(join(work, "authorized_keys"), "utf8") + readFileSync(`${jumpKey}.pub`, "utf8"));
      const yaml = [
        "type: fleet",
        "name: sshj",
        "ssh_config:",
        "  user: root",
        "  identity_file: ~/.ssh/id_fleet",
        "  proxy_jump:",
        "    hostname: 127.0.0.1",
        `    port: ${ports[1]}`,
        "    user: root",
        "    identity_file: ~/.ssh/id_jump",
        "  hosts:",
        "    - hostname: 127.0.0.1",
        `      port: ${ports[0]}`,
        "",
      ].join("\n");
      await writeFile(join(proj, "jump.dstack.yml"), yaml);
      const r = await dstack(["apply", "-y", "-f", "jump.dstack.yml"], { ...cli, cwd: proj });
      expect(r.stdout).toContain("The host is ready.");
      expect(r.code).toBe(0);
      const f = await client.fleets.get("sshj");
      expect(f.instances[0]!.status).toBe(InstanceStatus.IDLE);
      expect(f.spec?.configuration?.sshConfig?.proxyJump?.sshKey).toBeUndefined();
      await client.fleets.delete("sshj");
      const dir = `/opt/dstack/shim-${f.instances[0]!.id}`;
      for (let i = 0; existsSync(dir) && i < 100; i++) await new Promise((r) => setTimeout(r, 200));
      expect(existsSync(dir)).toBe(false);
    },
    SLOW,
  );

  it(
    "a host removed from the YAML and applied again leaves the fleet and is cleaned",
    async () => {
      await writeFile(join(proj, "fleet.dstack.yml"), fleetYaml([ports[0]!]));
      const r = await dstack(["apply", "-y", "-f", "fleet.dstack.yml"], { ...cli, cwd: proj });
      expect(r.code).toBe(0);
      const f = await waitFleet(client, server, "sshl", (f) => f.instances.length === 1);
      expect(f.instances[0]!.sshHost).toBe(`root@127.0.0.1:${ports[0]}`);
      for (;;) {
        if (!existsSync(dirs[1]!) && pgrep(`${dirs[1]}/`) === "") break;
        await new Promise((r) => setTimeout(r, 300));
      }
      // The kept host is untouched.
      expect(existsSync(join(dirs[0]!, "home", "identity.json"))).toBe(true);
      expect(pgrep(`${dirs[0]}/`)).not.toBe("");
    },
    SLOW,
  );
});
