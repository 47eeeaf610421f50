// SSH fleets and networks: `ssh_config.network` picks, among each host's addresses, the one
// jobs use between nodes (recorded as the instance's internal IP); a host's `blocks` splits it;
// `placement: cluster` needs every host in one network (the odd host fails alone); a network
// no address of a host is in fails that host; bad `network`/`internal_ip` values are refused at
// apply. The hosts are real sshd processes on loopback ports; the extra network is a Docker
// bridge the test creates (10.213.77.0/24, the machine gets 10.213.77.1 on it). A two-node task
// on the cluster gets those addresses in DSTACK_NODES_IPS / DSTACK_MASTER_NODE_IP.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
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
import { dstack } from "../cli/run-cli.js";
import { TEST_IMAGES, requireTestImages } from "../helpers/docker.js";
import { startTestServer, type ServerEnv, type TestServer, waitFleet } from "../helpers/server.js";
import { sshKeygen, startSshd, type Sshd } from "../helpers/sshd.js";

const SLOW = 180_000;
const NET = "10.213.77.0/24";
const NET_IP = "10.213.77.1";
const DOCKER_NET = `dstack-ssh-net-test-${process.pid}`;

let work: string;
let server: TestServer & { where: ServerEnv };
let client: Client;
const sshds: Sshd[] = [];
const ports: number[] = [];
const fleets: string[] = [];


const settled = (i: Fleet["instances"][number]) => i.status === InstanceStatus.IDLE || i.status === InstanceStatus.TERMINATED;

/** Applies a fleet of the two test hosts; `extra` lines go under ssh_config, `hostExtra[n]` under host n. */
async function apply(name: string, o: { placement?: string; ssh?: string[]; hostExtra?: string[][]; edit?: (c: FleetConfig) => void }) {
  const yaml = [
    "type: fleet",
    `name: ${name}`,
    ...(o.placement ? [`placement: ${o.placement}`] : []),
    "ssh_config:",
    "  user: root",
    `  identity_file: ${join(work, "id")}`,
    ...(o.ssh ?? []).map((l) => `  ${l}`),
    "  hosts:",
    ...ports.flatMap((p, n) => ["    - hostname: 127.0.0.1", `      port: ${p}`, ...(o.hostExtra?.[n] ?? []).map((l) => `      ${l}`)]),
    "",
  ].join("\n");
  fleets.push(name);
  const config = parseConfiguration(yaml, `${name}.dstack.yml`) as FleetConfig;
  o.edit?.(config);
  return client.fleets.apply(withSshKeys(config, `${name}.dstack.yml`, { cwd: work, env: process.env }));
}

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  await buildRunnerBundle({ log: () => {} });
  await buildShimBundle({ log: () => {} });
  work = await mkdtemp(join(tmpdir(), "dstack-ssh-net-"));
  sshKeygen(join(work, "host_key"));
  sshKeygen(join(work, "id"));
  execFileSync("cp", [join(work, "id.pub"), join(work, "authorized_keys")]);
  execFileSync("docker", ["network", "create", "--subnet", NET, "--gateway", NET_IP, DOCKER_NET], { stdio: "ignore" });
  for (let i = 0; i < 2; i++) {
    const sshd = await startSshd({ dir: work, hostKey: join(work, "host_key"), authorizedKeys: join(work, "authorized_keys") });
    sshds.push(sshd);
    ports.push(sshd.port);
  }
  server = await startTestServer("sqlite", { args: process.env.SSH_FLEET_DEBUG ? ["--log-level", "info"] : [] });
  client = Client.fromConfig({ env: { HOME: server.where.home } });
}, SLOW);

afterAll(async () => {
  const dirs: string[] = [];
  for (const name of new Set(fleets)) {
    try {
      dirs.push(...(await client.fleets.get(name)).instances.map((i) => `/opt/dstack/shim-${i.id}`));
      await client.fleets.delete(name);
    } catch {
      // refused at apply: never created
    }
  }
  for (let i = 0; i < 60 && dirs.some((d) => existsSync(d)); i++) await new Promise((r) => setTimeout(r, 500));
  await server?.stop();
  await Promise.all(sshds.map((s) => s.stop()));
  try {
    execFileSync("docker", ["network", "rm", DOCKER_NET], { stdio: "ignore" });
  } catch {
    // not created
  }
  if (work) await rm(work, { recursive: true, force: true });
}, SLOW);

describe("SSH fleet networks", () => {
  it(
    "network picks each host's address in it; a host's blocks split it; cluster hosts in one network provision",
    async () => {
      await apply("sshn", { placement: "cluster", ssh: [`network: ${NET}`], hostExtra: [["blocks: 2"], []] });
      const f = await waitFleet(client, server, "sshn", (f) => f.instances.length === 2 && f.instances.every((i) => settled(i) && (i.status === InstanceStatus.TERMINATED || i.internalIp !== "")));
      expect(f.instances.map((i) => [i.status, i.internalIp, i.totalBlocks])).toEqual([
        [InstanceStatus.IDLE, NET_IP, 2],
        [InstanceStatus.IDLE, NET_IP, 1],
      ]);

      // A two-node task on the cluster: every node is told the hosts' addresses in that network.
      const proj = await mkdtemp(join(work, "proj-"));
      await writeFile(
        join(proj, ".dstack.yml"),
        ["type: task", "name: two-nodes", `image: ${TEST_IMAGES.busybox}`, "nodes: 2", "fleets: [sshn]", "commands:", '  - echo "rank=$DSTACK_NODE_RANK master=$DSTACK_MASTER_NODE_IP ips=$(echo $DSTACK_NODES_IPS)"', ""].join("\n"),
      );
      const r = await dstack(["apply", "-y"], { home: server.where.home, cwd: proj });
      expect(r.stdout).toContain(`rank=0 master=${NET_IP} ips=${NET_IP} ${NET_IP}`);
      expect(r.code).toBe(0);
      const run = await client.runs.get("two-nodes");
      expect(new Set(run.jobs.map((j) => j.jobSubmissions.at(-1)?.jobProvisioningData?.instanceName))).toEqual(new Set(f.instances.map((i) => i.name)));
    },
    SLOW,
  );

  it("bad network and internal_ip values are refused by the server at apply, naming the field", async () => {
    // The CLI's parser refuses these too; the server checks what any API client sends.
    const net = (network: string) => (c: FleetConfig) => void (c.sshConfig!.network = network);
    await expect(apply("sshbad", { edit: net("8.8.8.0/24") })).rejects.toThrow("Invalid configuration of fleet 'sshbad': ssh_config.network 8.8.8.0/24 is not a private network");
    await expect(apply("sshbad", { edit: net("10.0.0.0/33") })).rejects.toThrow("ssh_config.network 10.0.0.0/33 is not an IPv4 network");
    // internal_ip (as in dstack): every host or none, never with network, private.
    const ips = (a: string | undefined, b: string | undefined) => (c: FleetConfig) => {
      c.sshConfig!.hosts[0]!.internalIp = a;
      c.sshConfig!.hosts[1]!.internalIp = b;
    };
    await expect(apply("sshbad", { ssh: [`network: ${NET}`], edit: ips("10.213.77.1", "10.213.77.1") })).rejects.toThrow(
      "ssh_config.hosts[0].internal_ip and ssh_config.network are mutually exclusive: set one of them",
    );
    await expect(apply("sshbad", { edit: ips(undefined, "10.9.9.9") })).rejects.toThrow("internal_ip must be set on every host or on none: ssh_config.hosts[0] (127.0.0.1) has none");
    await expect(apply("sshbad", { edit: ips("8.8.4.4", "10.9.9.9") })).rejects.toThrow("ssh_config.hosts[0].internal_ip 8.8.4.4 is not a private IPv4 address");
    // A client that sends identity_file paths without the keys: the server reads no path of its own.
    const noKeys = parseConfiguration(["type: fleet", "name: sshbad", "ssh_config:", "  user: root", `  identity_file: ${join(work, "id")}`, "  hosts: [127.0.0.1]", ""].join("\n"), "f.yml") as FleetConfig;
    await expect(client.fleets.apply(noKeys)).rejects.toThrow(
      `Invalid configuration of fleet 'sshbad': ssh_config.hosts[0] (127.0.0.1): identity_file ${join(work, "id")} was sent without the key itself (ssh_key)`,
    );
    await expect(client.fleets.get("sshbad")).rejects.toThrow(/does not exist/);
  });

  it(
    "cluster placement fails the host outside the others' network; a network no address is in fails each host",
    async () => {
      // Both addresses belong to the machine, but to different networks.
      await apply("sshc", { placement: "cluster", hostExtra: [[`internal_ip: ${NET_IP}`], ["internal_ip: 172.17.0.1"]] });
      await apply("sshx", { ssh: ["network: 10.99.99.0/24"] });
      const c = await waitFleet(client, server, "sshc", (f) => f.instances.length === 2 && f.instances.every(settled));
      const failed = c.instances.filter((i) => i.status === InstanceStatus.TERMINATED);
      expect(failed).toHaveLength(1);
      expect(c.instances.filter((i) => i.status === InstanceStatus.IDLE)).toHaveLength(1);
      expect(failed[0]!.terminationReasonMessage).toMatch(
        /^placement: cluster needs every host in one network: root@127\.0\.0\.1:\d+ is in (10\.213\.77\.0\/24|172\.17\.0\.0\/16), root@127\.0\.0\.1:\d+ in (10\.213\.77\.0\/24|172\.17\.0\.0\/16); set ssh_config\.network \(or internal_ip per host\) to the network they share$/,
      );
      const x = await waitFleet(client, server, "sshx", (f) => f.instances.length === 2 && f.instances.every(settled));
      for (const [n, i] of x.instances.entries()) {
        expect(i.status).toBe(InstanceStatus.TERMINATED);
        expect(i.terminationReasonMessage).toMatch(new RegExp(`^root@127\\.0\\.0\\.1:${ports[n]}: no address of the host is in ssh_config\\.network 10\\.99\\.99\\.0/24 \\(its addresses: .*${NET_IP.replace(/\./g, "\\.")}/24.*\\)$`));
      }
    },
    SLOW,
  );
});
