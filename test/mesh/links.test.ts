// Reverse calls, heartbeats and reconnects over real mTLS streams.
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { GetTaskCommandSchema, GetTaskResultSchema, PingCommandSchema, TaskInfoSchema, TaskState } from "@dstack/proto/agent";
import { LinkCallError, backoffDelay } from "@dstack/proto/link";
import { DEFAULT_LINK_SETTINGS, Links } from "../../server/src/mesh/index.js";
import { FAST_LINK, enrollShim, once, simShim, startMesh, type MeshFixture } from "./harness.js";

const ping = () => ({ case: "ping" as const, value: create(PingCommandSchema) });

describe("mesh: links", () => {
  let f: MeshFixture;
  beforeAll(async () => {
    f = await startMesh();
  });
  afterAll(async () => f?.cleanup());

  it("full-jitter backoff stays within 1 s doubling to 30 s", () => {
    const o = { initialMs: 1000, maxMs: 30_000 };
    expect(backoffDelay(0, o, () => 0.999)).toBe(999);
    expect(backoffDelay(3, o, () => 0.999)).toBe(7992);
    expect(backoffDelay(20, o, () => 0.999)).toBe(29970);
    expect(backoffDelay(5, o, () => 0)).toBe(0);
  });

  it("deadline exceeded, cancellation, agent errors and idempotent re-delivery", async () => {
    const { home, instanceId } = await enrollShim(f);
    let runs = 0;
    let sawAbort = "";
    const shim = simShim(home, [], {
      handlers: {
        ping: () => ({ agentTime: timestampNow() }),
        getTask: async (cmd, ctx) => {
          runs++;
          if (cmd.taskId === "missing") throw new LinkCallError("no such task", 2 /* NOT_FOUND */);
          // Slow: wait until cancelled.
          await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => ((sawAbort = String(ctx.signal.reason)), reject(ctx.signal.reason))));
          return create(GetTaskResultSchema);
        },
      },
    });
    await shim.link.waitConnected();
    const link = f.mesh.links.shim(instanceId);
    await expect(link.call({ case: "getTask", value: create(GetTaskCommandSchema, { taskId: "missing" }) })).rejects.toMatchObject({ code: Code.NotFound, rawMessage: "no such task" });
    const t0 = performance.now();
    await expect(link.call({ case: "getTask", value: create(GetTaskCommandSchema, { taskId: "slow" }) }, { deadlineMs: 150 })).rejects.toMatchObject({ code: Code.DeadlineExceeded });
    expect(performance.now() - t0).toBeLessThan(1000);
    const ac = new AbortController();
    const p = link.call({ case: "getTask", value: create(GetTaskCommandSchema, { taskId: "slow2" }) }, { signal: ac.signal });
    setTimeout(() => ac.abort("user pressed Ctrl-C"), 50);
    await expect(p).rejects.toMatchObject({ code: Code.Canceled });
    await new Promise((r) => setTimeout(r, 100));
    expect(sawAbort).toMatch(/user pressed Ctrl-C/); // the Cancel reached the agent's handler
    expect(link.pendingCalls).toBe(0);
    // An agent with no handler for a command says so.
    await expect(link.call({ case: "listTasks", value: {} as never })).rejects.toMatchObject({ code: Code.Unimplemented });
    expect(runs).toBe(3);
    await shim.link.close();
  });

  it("marks a silent agent unreachable after missed heartbeats, reachable when it speaks again", async () => {
    const { home, instanceId } = await enrollShim(f);
    // An agent whose own heartbeat period is far longer than the server's: it falls silent.
    const shim = simShim(home, [], { heartbeatIntervalMs: 60_000 });
    await shim.link.waitConnected();
    const link = f.mesh.links.shim(instanceId);
    expect(link.reachable).toBe(true);
    const t0 = performance.now();
    await new Promise<void>((resolve) => f.mesh.links.on("unreachable", (l) => l === link && resolve()));
    const after = performance.now() - t0;
    expect(after).toBeGreaterThanOrEqual(250); // 3 × 100 ms, give or take a tick
    expect(after).toBeLessThan(1500);
    const back = once(f.mesh.links, "reachable");
    shim.link.sendEvent({ event: { case: "hostInfo", value: {} } });
    await back;
    expect(link.reachable).toBe(true);
    await shim.link.close();
  });

  it("a second connection for the same identity replaces the first", async () => {
    const { home, instanceId } = await enrollShim(f);
    const a = simShim(home);
    await a.link.waitConnected();
    const replaced = once<[unknown, string]>(f.mesh.links, "disconnected");
    const b = simShim(home);
    await b.link.waitConnected();
    expect((await replaced)[1]).toBe("replaced");
    await a.link.close();
    await expect(f.mesh.links.shim(instanceId).call(ping())).resolves.toBeDefined();
    await b.link.close();
  });

  it("server killed mid-stream: the agent reconnects to a new server on the same home and port and re-reports its state", async () => {
    const { home, instanceId } = await enrollShim(f);
    const job = await f.addJob(instanceId);
    const shim = simShim(home, [job]);
    await shim.link.waitConnected();
    expect(shim.reports).toBe(1);
    const t0 = performance.now();
    await f.restart();
    const reported = new Promise<unknown>((resolve) => f.mesh.links.on("event", (l, e) => l.id === instanceId && e.case === "stateReport" && resolve(e.value)));
    await shim.link.waitConnected(5000).catch(() => {});
    await reported;
    const reconnectMs = performance.now() - t0;
    expect(shim.reports).toBe(2);
    expect(f.mesh.links.shim(instanceId).stateReport?.tasks.map((t) => t.taskId)).toEqual([job]);
    console.log(`reconnect after server restart: ${reconnectMs.toFixed(0)} ms`);
    await shim.link.close();
  });

  it("TCP connection cut by a proxy: the agent reconnects and re-reports; a pending call survives", async () => {
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((client) => {
      const upstream = net.connect(f.port, "127.0.0.1");
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const drop = () => (client.destroy(), upstream.destroy());
      client.on("error", drop).on("close", drop);
      upstream.on("error", drop).on("close", drop);
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", () => r()));
    const proxyUrl = `https://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
    const { home, instanceId } = await enrollShim(f, proxyUrl);
    let answered = 0;
    let gate: () => void = () => {};
    const opened = new Promise<void>((r) => (gate = r));
    const shim = simShim(home, [], {
      handlers: {
        ping: () => ({ agentTime: timestampNow() }),
        getTask: async () => {
          answered++;
          gate();
          await new Promise((r) => setTimeout(r, 150)); // still working while the cable is cut
          return create(GetTaskResultSchema, { task: create(TaskInfoSchema, { taskId: "t", state: TaskState.RUNNING }) });
        },
      },
    });
    await shim.link.waitConnected();
    const call = f.mesh.links.shim(instanceId).call({ case: "getTask", value: create(GetTaskCommandSchema, { taskId: "t" }) }, { deadlineMs: 5000 });
    await opened;
    const t0 = performance.now();
    for (const s of sockets) s.destroy();
    sockets.clear();
    await once(shim.link, "disconnected");
    await shim.link.waitConnected(5000);
    const reconnectMs = performance.now() - t0;
    const result = await call;
    expect(result.task?.taskId).toBe("t");
    expect(answered).toBe(1); // re-delivered on the new stream, answered from the agent's stored reply
    expect(shim.reports).toBe(2);
    console.log(`reconnect after TCP cut: ${reconnectMs.toFixed(0)} ms`);
    await shim.link.close();
    proxy.close();
  });

  it("the agent notices a silent server (half-open connection) and redials", async () => {
    const frozen = new Set<net.Socket>();
    let freeze = false;
    const proxy = net.createServer((client) => {
      const upstream = net.connect(f.port, "127.0.0.1");
      if (freeze) return void frozen.add(client).add(upstream); // accept, then forward nothing
      client.pipe(upstream).pipe(client);
      const drop = () => (client.destroy(), upstream.destroy());
      client.on("error", drop).on("close", drop);
      upstream.on("error", drop).on("close", drop);
      frozen.add(client).add(upstream);
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", () => r()));
    const proxyUrl = `https://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
    const { home } = await enrollShim(f, proxyUrl);
    const shim = simShim(home, [], { heartbeatIntervalMs: 100 });
    await shim.link.waitConnected();
    // Black-hole the established connection: bytes go nowhere, nothing closes.
    for (const s of frozen) if (s.readable) s.unpipe().pause();
    const t0 = performance.now();
    await once(shim.link, "disconnected", 5000);
    expect(performance.now() - t0).toBeLessThan(2000);
    await shim.link.close();
    for (const s of frozen) s.destroy();
    proxy.close();
  });

  it("a stalled event loop (a long task, a GC pause) makes neither end give up on the other", async () => {
    const { home, instanceId } = await enrollShim(f);
    const shim = simShim(home, [], { heartbeatIntervalMs: 100 });
    await shim.link.waitConnected();
    let drops = 0;
    shim.link.on("disconnected", () => drops++);
    const onServerDrop = (l: { id: string }) => l.id === instanceId && drops++;
    f.mesh.links.on("disconnected", onServerDrop);
    try {
      // Both ends live in this process: 1.5 s of synchronous work is longer than the server's
      // idle close (10 × 100 ms) and the agent's watchdog (3 × 100 ms). The first timers to fire
      // afterwards must not read the unread heartbeats as silence.
      const until = Date.now() + 1500;
      while (Date.now() < until);
      await new Promise((r) => setTimeout(r, 500));
      expect(drops).toBe(0);
      expect(shim.link.connected).toBe(true);
      expect(f.mesh.links.shim(instanceId).connected).toBe(true);
      await expect(f.mesh.links.shim(instanceId).call(ping())).resolves.toBeDefined();
    } finally {
      f.mesh.links.off("disconnected", onServerDrop);
      await shim.link.close();
    }
  });

  it("a busy link carries no heartbeats: commands one way and replies the other prove both ends alive", async () => {
    const { home, instanceId } = await enrollShim(f);
    const shim = simShim(home, [], { heartbeatIntervalMs: 100 });
    await shim.link.waitConnected();
    const link = f.mesh.links.shim(instanceId);
    let serverBeats = 0;
    const beat = link.heartbeat.bind(link);
    link.heartbeat = () => (serverBeats++, beat());
    let heard = 0;
    const seen = f.mesh.links.seen.bind(f.mesh.links);
    f.mesh.links.seen = (l) => (l === link && heard++, seen(l));
    try {
      // Idle for 1 s: heartbeats both ways, one per 100 ms period.
      await new Promise((r) => setTimeout(r, 1000));
      expect(serverBeats).toBeGreaterThanOrEqual(7);
      expect(heard).toBeGreaterThanOrEqual(7);
      // Busy for 1 s: a ping every 30 ms, each answered; the traffic stands in for heartbeats.
      serverBeats = heard = 0;
      let calls = 0;
      const until = performance.now() + 1000;
      while (performance.now() < until) {
        await link.call(ping());
        calls++;
        await new Promise((r) => setTimeout(r, 30));
      }
      expect(serverBeats).toBeLessThanOrEqual(1);
      expect(heard - calls).toBeLessThanOrEqual(1); // replies only, give or take one heartbeat
      expect(link.reachable).toBe(true);
    } finally {
      delete (f.mesh.links as { seen?: unknown }).seen;
      await shim.link.close();
    }
  });

  it("stretches the heartbeat period past maxHeartbeatsPerSecond links, as Nomad stretches its TTL", async () => {
    const links = new Links(DEFAULT_LINK_SETTINGS);
    expect(links.heartbeatIntervalFor(1)).toBe(5_000);
    expect(links.heartbeatIntervalFor(5_000)).toBe(5_000);
    expect(links.heartbeatIntervalFor(7_500)).toBe(8_000); // whole seconds: LinkAccepted says seconds
    expect(links.heartbeatIntervalFor(10_000)).toBe(10_000);
    links.close();
    // Real links: at most 1 heartbeat/s, so the second link is told 2 s and the server expects that.
    await f.restart({ link: { ...FAST_LINK, heartbeatIntervalMs: 1000, maxHeartbeatsPerSecond: 1 } });
    try {
      const a = await enrollShim(f);
      const b = await enrollShim(f);
      const sa = simShim(a.home);
      await sa.link.waitConnected();
      const sb = simShim(b.home);
      await sb.link.waitConnected();
      const la = f.mesh.links.shim(a.instanceId);
      expect(f.mesh.links.shim(b.instanceId).heartbeatMs).toBe(2000);
      expect(f.mesh.links.connectedCount).toBe(2);
      // The first link, told 1 s, is stretched to 2 s at its next heartbeat, which says so.
      expect([1000, 2000]).toContain(la.heartbeatMs);
      let unreachable = 0;
      f.mesh.links.on("unreachable", () => unreachable++);
      await new Promise((r) => setTimeout(r, 1500));
      expect(la.heartbeatMs).toBe(2000);
      // Both agents follow: over 6 s each sends about 3 heartbeats, not 6, and neither looks silent.
      const heard = new Map<string, number>();
      const seen = f.mesh.links.seen.bind(f.mesh.links);
      f.mesh.links.seen = (l) => (heard.set(l.id, (heard.get(l.id) ?? 0) + 1), seen(l));
      await new Promise((r) => setTimeout(r, 6000));
      delete (f.mesh.links as { seen?: unknown }).seen;
      for (const id of [a.instanceId, b.instanceId]) expect(heard.get(id)).toBeGreaterThanOrEqual(2);
      for (const id of [a.instanceId, b.instanceId]) expect(heard.get(id)).toBeLessThanOrEqual(4);
      expect(unreachable).toBe(0);
      expect(la.connected && f.mesh.links.shim(b.instanceId).connected).toBe(true);
      await sa.link.close();
      await sb.link.close();
      expect(f.mesh.links.connectedCount).toBe(0);
    } finally {
      await f.restart();
    }
  });

  it("renews its certificate over the link before it expires", async () => {
    await f.restart({ certificateLifetimeMs: 3000 });
    const { home } = await enrollShim(f);
    const shim = simShim(home);
    await shim.link.waitConnected();
    const [notAfter] = await once<[string]>(shim.link, "renewed", 5000);
    expect(new Date(notAfter).getTime()).toBeGreaterThan(Date.now());
    await shim.link.close();
  });
});
