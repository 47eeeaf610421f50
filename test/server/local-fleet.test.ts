// The embedded local fleet, on SQLite and PostgreSQL, against a REAL server process: with a
// Docker engine answering (a stand-in answering GET /_ping at DOCKER_HOST) the server registers
// fleet `local` of project `main`, spawns the host agent (DSTACK_SHIM_BIN: a small script that
// records its argv and dials home with the real link library) with the join flags, prints the
// local fleet's banner at its first report, restarts it when it dies (now with `run --home`), and
// stops it with SIGTERM on shutdown. `--no-local-fleet` does none of it.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FleetService, InstanceService, InstanceStatus } from "@dstack/proto/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServerEnv, DIALECTS, startServer, type ServerEnv } from "../helpers/server.js";
import { until } from "../helpers/sim-agents.js";

const FAKE_SHIM = resolve(fileURLToPath(new URL("../helpers/fake-shim.mjs", import.meta.url)));

interface ShimRecord {
  event: "start" | "up" | "sigterm";
  argv?: string[];
  pid: number;
}

describe.each(DIALECTS)("the local fleet on %s", (dialect) => {
  let docker: Server;
  let dockerHost = "";
  let dir = "";

  beforeAll(async () => {
    // A Docker engine as far as the server's probe can tell.
    docker = createServer((req, res) => {
      res.writeHead(req.url === "/_ping" ? 200 : 404, { "content-type": "text/plain" }).end("OK");
    });
    await new Promise<void>((ok) => docker.listen(0, "127.0.0.1", ok));
    dockerHost = `tcp://127.0.0.1:${(docker.address() as { port: number }).port}`;
    dir = mkdtempSync(join(tmpdir(), "dstack-local-fleet-"));
  });

  afterAll(async () => {
    await new Promise((ok) => docker?.close(ok));
    rmSync(dir, { recursive: true, force: true });
  });

  const records = (log: string): ShimRecord[] => (existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as ShimRecord) : []);

  it("--no-local-fleet registers no fleet and starts no host agent", async () => {
    const where: ServerEnv = await createServerEnv(dialect);
    const log = join(dir, `off-${dialect}.jsonl`);
    try {
      const server = await startServer(where, { localFleet: true, args: ["--no-local-fleet"], env: { DSTACK_SHIM_BIN: FAKE_SHIM, DOCKER_HOST: dockerHost, FAKE_SHIM_LOG: log } });
      const fleets = createClient(FleetService, createGrpcTransport({ baseUrl: server.url }));
      const { fleets: list } = await fleets.listFleets({ projectName: "main" }, { headers: { authorization: `Bearer ${server.adminToken}` } });
      expect(list).toEqual([]);
      expect(server.stdout()).not.toContain("local fleet");
      expect(await server.stop()).toBe(0);
      expect(records(log)).toEqual([]);
    } finally {
      await where.cleanup();
    }
  });

  it("registers `local`, runs the host agent with the join flags, restarts it when it dies, and stops it with SIGTERM", async () => {
    const where = await createServerEnv(dialect);
    const log = join(dir, `on-${dialect}.jsonl`);
    try {
      const server = await startServer(where, { localFleet: true, env: { DSTACK_SHIM_BIN: FAKE_SHIM, DOCKER_HOST: dockerHost, FAKE_SHIM_LOG: log } });
      const admin = { headers: { authorization: `Bearer ${server.adminToken}` } };
      const transport = createGrpcTransport({ baseUrl: server.url });
      const fleets = createClient(FleetService, transport);
      const instances = createClient(InstanceService, transport);

      // The fleet and its one instance exist; the agent was started to join as that instance.
      const { fleets: list } = await fleets.listFleets({ projectName: "main" }, admin);
      expect(list.map((f) => f.name)).toEqual(["local"]);
      const first = await until(async () => records(log).find((r) => r.event === "start"), "the host agent to start");
      const home = join(where.serverDir, "local-shim");
      const [cmd, ...flags] = first.argv!;
      expect(cmd).toBe("join");
      const flag = (name: string) => flags[flags.indexOf(name) + 1];
      expect([flag("--server"), flag("--ca-sha256"), flag("--home")]).toEqual([server.agentUrl, server.caFingerprint, home]);
      const { instances: insts } = await instances.listInstances({ projectNames: ["main"], fleetNames: ["local"] }, admin);
      expect(insts).toHaveLength(1);
      expect(flag("--token")?.startsWith(`dsj.${insts[0]!.id}.`)).toBe(true);

      // Its first state report makes the machine usable and prints the banner.
      await until(async () => (server.stdout().includes("The local fleet is ready") ? true : undefined), "the local fleet banner");
      expect(server.stdout()).toContain("The local fleet is ready (4 CPUs, 16 GB memory, GPUs: none)");
      const idle = await until(async () => {
        const { instances: now } = await instances.listInstances({ projectNames: ["main"], fleetNames: ["local"] }, admin);
        return now[0]?.status === InstanceStatus.IDLE ? now[0] : undefined;
      }, "the local instance to become idle");
      expect([idle.name, idle.hostname, idle.backend]).toEqual(["local-0", "fake-local", 1]);

      // It dies: the server starts it again, now with the identity it enrolled.
      process.kill(first.pid, "SIGKILL");
      const second = await until(async () => records(log).filter((r) => r.event === "start")[1], "the host agent to be restarted");
      expect(second.argv).toEqual(["run", "--home", home]);
      await until(async () => records(log).find((r) => r.event === "up" && r.pid === second.pid), "the restarted host agent to dial home");

      // Shutdown sends it SIGTERM and waits for it.
      expect(await server.stop()).toBe(0);
      const after = records(log);
      expect(after[after.length - 1]).toEqual({ event: "sigterm", pid: second.pid });
      expect(() => process.kill(second.pid, 0)).toThrow();

      // Started again with another agent port: the stored identity names the old URL, so the host
      // agent joins again (same instance) at the new one instead of dialing a port nobody serves.
      const again = await startServer(where, { localFleet: true, env: { DSTACK_SHIM_BIN: FAKE_SHIM, DOCKER_HOST: dockerHost, FAKE_SHIM_LOG: log } });
      expect(again.agentUrl).not.toBe(server.agentUrl);
      const third = await until(async () => records(log).filter((r) => r.event === "start")[2], "the host agent to start with the new server");
      expect(third.argv![0]).toBe("join");
      expect(third.argv![third.argv!.indexOf("--server") + 1]).toBe(again.agentUrl);
      expect(third.argv![third.argv!.indexOf("--token") + 1]?.startsWith(`dsj.${insts[0]!.id}.`)).toBe(true);
      await until(async () => records(log).find((r) => r.event === "up" && r.pid === third.pid), "the host agent to dial the new agent port");
      expect(await again.stop()).toBe(0);
    } finally {
      await where.cleanup();
    }
  });
});
