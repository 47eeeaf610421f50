// SSH fleets, per-host failures and host keys: real OpenSSH servers on loopback ports stand for
// hosts that each lack one thing the provisioner checks for: Docker (DOCKER_HOST in the session
// points at no socket), x86-64 (a `uname` in the session's PATH reports aarch64), disk (a `df` in its PATH
// reports 50 MB free), an answer (a TCP listener that never speaks SSH), a Docker that answers
// in time (its `docker` never returns), GPU tooling (an `lspci` in its PATH lists an NVIDIA H100 but
// there is no nvidia-smi, or it hangs, or Docker has no nvidia runtime). Each fails alone with its own message
// while the good hosts become idle: the plain one and a GPU one (fake lspci, nvidia-smi printing a
// recorded H100 listing, docker reporting the nvidia runtime). Then the good host's sshd gets a new host
// key: the next apply refuses it ("host key … changed"), the instance keeps running and shows
// the problem; so does a changed key of a proxy_jump host; and an unchanged re-apply does not
// reinstall the shim.
import { execFileSync } from "node:child_process";
import { mkdirSync, statSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfiguration, type FleetConfig } from "@dstack/proto";
import { InstanceStatus, type Fleet } from "@dstack/proto/api";
import { Client } from "../../cli/src/index.js";
import { withSshKeys } from "../../cli/src/commands/fleet-apply.js";
import { buildRunnerBundle } from "../../scripts/build-runner-bundle.js";
import { buildShimBundle } from "../../scripts/build-shim-bundle.js";
import { freePort, startTestServer, type ServerEnv, type TestServer, waitFleet } from "../helpers/server.js";
import { sshKeygen, startSshd, type Sshd } from "../helpers/sshd.js";

const SLOW = 180_000;
const STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

let work: string;
let server: TestServer & { where: ServerEnv };
let client: Client;
const sshds = new Map<number, Sshd>();
let hang: Server;
const port: Record<"ok" | "noDocker" | "arm" | "noSpace" | "hang" | "hungDocker" | "gpu" | "gpuNoSmi" | "gpuNoRuntime" | "gpuHungSmi", number> = {
  ok: 0,
  noDocker: 0,
  arm: 0,
  noSpace: 0,
  hang: 0,
  hungDocker: 0,
  gpu: 0,
  gpuNoSmi: 0,
  gpuNoRuntime: 0,
  gpuHungSmi: 0,
};
const HOSTS = Object.keys(port).length;
/** A jump host (not in the fleet "sshh"): the proxy_jump of fleet "sshj". */
let jumpPort = 0;

/** Starts (or restarts) the "host" on port `p`: its host key, and what its sessions have in their environment (the test's knob). */
async function startHost(p: number, hostKey: string, env: Record<string, string> = {}): Promise<void> {
  sshds.set(p, await startSshd({ dir: work, port: p, hostKey, authorizedKeys: join(work, "authorized_keys"), env }));
}

const stopHost = (p: number) => sshds.get(p)!.stop();

/** A directory of commands that shadow the real ones in a host's sessions. */
async function wrapperDir(name: string, scripts: Record<string, string>): Promise<string> {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  for (const [cmd, body] of Object.entries(scripts)) {
    await writeFile(join(dir, cmd), `#!/bin/sh\n${body}\n`);
    await chmod(join(dir, cmd), 0o755);
  }
  return dir;
}

const fingerprint = (pub: string) => execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", pub], { encoding: "utf8" }).split(" ")[1]!;


const fleetYaml = () =>
  [
    "type: fleet",
    "name: sshh",
    "ssh_config:",
    "  user: root",
    `  identity_file: ${join(work, "id_good")}`,
    "  hosts:",
    ...Object.values(port).flatMap((p) => ["    - hostname: 127.0.0.1", `      port: ${p}`]),
    "",
  ].join("\n");

const apply = () => client.fleets.apply(withSshKeys(parseConfiguration(fleetYaml(), "fleet.dstack.yml") as FleetConfig, "fleet.dstack.yml", { cwd: work, env: process.env }));
const settled = (i: Fleet["instances"][number]) => i.status === InstanceStatus.IDLE || i.status === InstanceStatus.TERMINATED;

beforeAll(async () => {
  await buildRunnerBundle({ log: () => {} });
  await buildShimBundle({ log: () => {} });
  work = await mkdtemp(join(tmpdir(), "dstack-ssh-hosts-"));
  for (const k of ["host_key", "host_key_new", "host_key_jump", "id_good"]) sshKeygen(join(work, k));
  execFileSync("cp", [join(work, "id_good.pub"), join(work, "authorized_keys")]);
  for (const k of Object.keys(port) as (keyof typeof port)[]) port[k] = await freePort();
  jumpPort = await freePort();
  await startHost(jumpPort, join(work, "host_key_jump"));
  // GPU hosts: an H100 on the PCI bus (lspci), and what of its tooling each host has.
  const realDocker = execFileSync("sh", ["-c", "command -v docker"], { encoding: "utf8" }).trim();
  const lspci = 'echo "00:02.0 0300: 1a03:2000 (rev 52)"; echo "18:00.0 0302: 10de:2330 (rev a1)"';
  const smi = `cat ${join(import.meta.dirname, "../../agent-shim/src/host/fixtures/nvidia-smi-h100x1.csv")}`;
  const runtimes = (r: string) => `if [ "$1" = info ]; then echo '${r}'; else exec ${realDocker} "$@"; fi`;
  const gpuOk = await wrapperDir("gpu", { lspci, "nvidia-smi": smi, docker: runtimes('{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}') });
  const gpuNoSmi = await wrapperDir("gpu-no-smi", { lspci });
  const gpuNoRuntime = await wrapperDir("gpu-no-runtime", { lspci, "nvidia-smi": smi, docker: runtimes('{"runc":{"path":"runc"}}') });
  await startHost(port.gpu, join(work, "host_key"), { PATH: `${gpuOk}:${STD_PATH}` });
  await startHost(port.gpuNoSmi, join(work, "host_key"), { PATH: `${gpuNoSmi}:${STD_PATH}` });
  await startHost(port.gpuNoRuntime, join(work, "host_key"), { PATH: `${gpuNoRuntime}:${STD_PATH}` });
  // A wedged driver: nvidia-smi never returns.
  const gpuHungSmi = await wrapperDir("gpu-hung-smi", { lspci, "nvidia-smi": "exec sleep 30" });
  await startHost(port.gpuHungSmi, join(work, "host_key"), { PATH: `${gpuHungSmi}:${STD_PATH}` });
  const arm = await wrapperDir("arm", { uname: 'if [ "$1" = "-sm" ]; then echo "Linux aarch64"; else exec /usr/bin/uname "$@"; fi' });
  const full = await wrapperDir("full", {
    df: 'if [ "$1" = "-Pk" ]; then echo "Filesystem 1024-blocks Used Available Capacity Mounted on"; echo "/dev/small 1048576 997376 51200 96% /"; else exec /usr/bin/df "$@"; fi',
  });
  // A Docker CLI that never answers (a hung daemon): the check's deadline (5 s here) ends it.
  const hung = await wrapperDir("hung", { docker: "exec sleep 30" });
  await startHost(port.hungDocker, join(work, "host_key"), { PATH: `${hung}:${STD_PATH}` });
  await startHost(port.ok, join(work, "host_key"));
  // No Docker engine reachable from this host's sessions: its socket is somewhere else.
  await startHost(port.noDocker, join(work, "host_key"), { DOCKER_HOST: "unix:///nonexistent/docker.sock" });
  await startHost(port.arm, join(work, "host_key"), { PATH: `${arm}:${STD_PATH}` });
  await startHost(port.noSpace, join(work, "host_key"), { PATH: `${full}:${STD_PATH}` });
  // Accepts TCP, never says a word of SSH.
  hang = createServer(() => {});
  await new Promise<void>((r) => hang.listen(port.hang, "127.0.0.1", r));
  server = await startTestServer("sqlite", { args: process.env.SSH_FLEET_DEBUG ? ["--log-level", "info"] : [], env: { DSTACK_SERVER_SSH_COMMAND_TIMEOUT: "5" } });
  client = Client.fromConfig({ env: { HOME: server.where.home } });
}, SLOW);

afterAll(async () => {
  // Leave the host clean: deleting the fleet removes the shim.
  try {
    await client?.fleets.delete("sshh");
    await client?.fleets.delete("sshj").catch(() => {});
    const dirs = () => execFileSync("sh", ["-c", "ls -d /opt/dstack/shim-* 2>/dev/null || true"], { encoding: "utf8" });
    for (let i = 0; i < 60 && ownDirs.some((d) => dirs().includes(d)); i++) await new Promise((r) => setTimeout(r, 500));
  } catch {
    // the fleet may not exist if setup failed
  }
  await server?.stop();
  await Promise.all([...sshds.values()].map((s) => s.stop()));
  hang?.close();
  if (work) await rm(work, { recursive: true, force: true });
}, SLOW);

const ownDirs: string[] = [];

describe("SSH fleet hosts", () => {
  it(
    "each broken host fails alone with a precise message while the good one provisions",
    async () => {
      await apply();
      const f = await waitFleet(client, server, "sshh", (f) => f.instances.length === HOSTS && f.instances.every(settled));
      const byPort = (p: number) => f.instances.find((i) => i.name === `sshh-${Object.values(port).indexOf(p)}`)!;
      expect(byPort(port.ok).status).toBe(InstanceStatus.IDLE);
      expect(byPort(port.ok).statusMessage).toBe("");
      ownDirs.push(`/opt/dstack/shim-${byPort(port.ok).id}`);
      // The GPU host with nvidia-smi and the nvidia runtime passes the check.
      expect(byPort(port.gpu).status).toBe(InstanceStatus.IDLE);
      expect(byPort(port.gpu).statusMessage).toBe("");
      ownDirs.push(`/opt/dstack/shim-${byPort(port.gpu).id}`);
      const failed = (p: number) => {
        const i = byPort(p);
        expect(i.status).toBe(InstanceStatus.TERMINATED);
        expect(i.statusMessage).toBe(i.terminationReasonMessage);
        return i.terminationReasonMessage;
      };
      expect(failed(port.noDocker)).toBe(`no Docker engine answers on root@127.0.0.1:${port.noDocker}: Cannot connect to the Docker daemon at unix:///nonexistent/docker.sock. Is the docker daemon running?`);
      expect(failed(port.arm)).toBe(`unsupported host root@127.0.0.1:${port.arm}: \`uname -sm\` says 'Linux aarch64'; the shim bundle is built for Linux x86_64`);
      expect(failed(port.noSpace)).toMatch(new RegExp(`^not enough disk space on root@127\\.0\\.0\\.1:${port.noSpace}: 50 MB free in /opt/dstack, the shim needs \\d+ MB$`));
      expect(failed(port.hang)).toBe(`SSH connection to 127.0.0.1:${port.hang} timed out`);
      expect(failed(port.hungDocker)).toBe(`\`docker version\` did not finish within 5 s on root@127.0.0.1:${port.hungDocker}`);
      expect(failed(port.gpuNoSmi)).toBe(`NVIDIA GPU found on root@127.0.0.1:${port.gpuNoSmi} but nvidia-smi is missing; install the NVIDIA driver`);
      expect(failed(port.gpuHungSmi)).toBe(`the GPU check (nvidia-smi, docker info) did not finish within 5 s on root@127.0.0.1:${port.gpuHungSmi}`);
      expect(failed(port.gpuNoRuntime)).toBe(
        `NVIDIA GPU found on root@127.0.0.1:${port.gpuNoRuntime} but the NVIDIA Container Toolkit is not configured for Docker (no nvidia runtime); install nvidia-container-toolkit and run \`nvidia-ctk runtime configure --runtime=docker\`, then restart Docker`,
      );
    },
    SLOW,
  );

  it(
    "an unchanged re-apply leaves the set-up host alone",
    async () => {
      const before = (await client.fleets.get("sshh")).instances[0]!;
      const marker = join(ownDirs[0]!, "install.sha256");
      const shimJs = join(ownDirs[0]!, "shim-bundle", "shim.js");
      const stamp = [statSync(marker).mtimeMs, statSync(shimJs).mtimeMs];
      await apply();
      const f = await waitFleet(client, server, "sshh", (f) => f.instances.length === HOSTS && f.instances.every(settled));
      expect(f.instances[0]!.id).toBe(before.id);
      expect(f.instances[0]!.status).toBe(InstanceStatus.IDLE);
      expect([statSync(marker).mtimeMs, statSync(shimJs).mtimeMs]).toEqual(stamp);
    },
    SLOW,
  );

  it(
    "a host whose SSH host key changed is refused with both fingerprints; its instance stays and shows why",
    async () => {
      const was = fingerprint(join(work, "host_key.pub"));
      const now = fingerprint(join(work, "host_key_new.pub"));
      await stopHost(port.ok);
      await startHost(port.ok, join(work, "host_key_new"));
      await apply();
      const message = `host key for 127.0.0.1:${port.ok} changed (was ${was}, now ${now}); if the host was reinstalled, remove it from the fleet, apply, then add it back`;
      const f = await waitFleet(client, server, "sshh", (f) => f.instances[0]!.statusMessage !== "");
      expect(f.instances[0]!.statusMessage).toBe(message);
      expect(f.instances[0]!.status).toBe(InstanceStatus.IDLE);
      // The old key back: the next apply passes the check and clears the message.
      await stopHost(port.ok);
      await startHost(port.ok, join(work, "host_key"));
      await apply();
      const g = await waitFleet(client, server, "sshh", (f) => f.instances[0]!.statusMessage === "");
      expect(g.instances[0]!.status).toBe(InstanceStatus.IDLE);
    },
    SLOW,
  );

  it(
    "a proxy_jump host whose SSH host key changed is refused the same way, naming the jump host",
    async () => {
      // Behind the jump: the host without Docker, which fails fast after the login (and the key pinning).
      const yaml = [
        "type: fleet",
        "name: sshj",
        "ssh_config:",
        "  user: root",
        `  identity_file: ${join(work, "id_good")}`,
        "  proxy_jump:",
        "    hostname: 127.0.0.1",
        `    port: ${jumpPort}`,
        "    user: root",
        `    identity_file: ${join(work, "id_good")}`,
        "  hosts:",
        "    - hostname: 127.0.0.1",
        `      port: ${port.noDocker}`,
        "",
      ].join("\n");
      const applyJ = () => client.fleets.apply(withSshKeys(parseConfiguration(yaml, "jump.dstack.yml") as FleetConfig, "jump.dstack.yml", { cwd: work, env: process.env }));
      await applyJ();
      const noDocker = `no Docker engine answers on root@127.0.0.1:${port.noDocker}: Cannot connect to the Docker daemon at unix:///nonexistent/docker.sock. Is the docker daemon running?`;
      const f = await waitFleet(client, server, "sshj", (f) => f.instances.length === 1 && settled(f.instances[0]!));
      expect(f.instances[0]!.terminationReasonMessage).toBe(noDocker);
      // The jump host is reinstalled with a new key: the next try stops at the jump host.
      const was = fingerprint(join(work, "host_key_jump.pub"));
      const now = fingerprint(join(work, "host_key_new.pub"));
      await stopHost(jumpPort);
      await startHost(jumpPort, join(work, "host_key_new"));
      await applyJ();
      const message = `host key for 127.0.0.1:${jumpPort} changed (was ${was}, now ${now}); if the host was reinstalled, remove it from the fleet, apply, then add it back`;
      const g = await waitFleet(client, server, "sshj", (f) => f.instances[0]!.terminationReasonMessage !== noDocker && settled(f.instances[0]!));
      expect(g.instances[0]!.terminationReasonMessage).toBe(message);
      expect(g.instances[0]!.status).toBe(InstanceStatus.TERMINATED);
      await client.fleets.delete("sshj");
    },
    SLOW,
  );
});
