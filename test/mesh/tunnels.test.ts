// Tunnels over real mTLS: the server's broker asks a simulated shim (the real link library) to
// open a tunnel, the shim dials TunnelService.Open with `acceptTunnel` and joins it to a TCP
// server in this test with `serveTunnelToTcp`. Bytes, half-closes, refusals, deadlines,
// concurrency and backpressure are checked end to end; throughput and added latency are printed.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import net from "node:net";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { OpenTunnelResultSchema, type OpenTunnelCommand } from "@dstack/proto/agent";
import { acceptTunnel, agentTransport, IdentityStore, serveTunnelToTcp, type LinkClient } from "@dstack/proto/link";
import { enrollShim, simShim, startMesh, type MeshFixture } from "./harness.js";

const MB = 1024 * 1024;

/** A TCP server for the test; `conns` counts open connections. */
async function tcpServer(onConn: (s: net.Socket) => void): Promise<{ port: number; server: net.Server; conns: () => number; close(): Promise<void> }> {
  let open = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    open++;
    sockets.add(s);
    s.once("close", () => (open--, sockets.delete(s)));
    s.on("error", () => {});
    onConn(s);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    server,
    conns: () => open,
    // Ends what a failed test left open too, so the suite's clean-up never waits on it.
    close: () => new Promise((r) => (server.close(() => r()), sockets.forEach((s) => s.destroy()))),
  };
}

/** Polls `pred` until true; fails after `ms` with `what` (a bound, not a timing assertion). */
async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Everything `s` yields until its end, as one buffer (the stream stays open for writing). */
async function readAll(s: Duplex): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s.iterator({ destroyOnReturn: false })) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Reads exactly `n` bytes from a flowing-off stream. */
function readN(s: Duplex, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer) => {
      parts.push(c);
      got += c.length;
      if (got >= n) {
        s.off("data", onData);
        s.off("error", reject);
        s.pause();
        const all = Buffer.concat(parts);
        if (all.length > n) s.unshift(all.subarray(n));
        resolve(all.subarray(0, n));
      }
    };
    s.on("data", onData);
    s.once("error", reject);
    s.resume();
  });
}

/** Writes `total` random bytes in 1 MiB chunks with backpressure; resolves with their sha256. */
async function writeRandom(s: Duplex, total: number, end = true): Promise<string> {
  const h = createHash("sha256");
  for (let sent = 0; sent < total; ) {
    const chunk = randomBytes(Math.min(MB, total - sent));
    h.update(chunk);
    sent += chunk.length;
    if (!s.write(chunk)) await new Promise<void>((r, j) => (s.once("drain", r), s.once("error", j)));
  }
  if (end) s.end();
  return h.digest("hex");
}

/** Hashes what `s` yields until its end. */
async function hashAll(s: Duplex): Promise<{ sha256: string; bytes: number }> {
  const h = createHash("sha256");
  let bytes = 0;
  for await (const c of s.iterator({ destroyOnReturn: false })) {
    h.update(c as Buffer);
    bytes += (c as Buffer).length;
  }
  return { sha256: h.digest("hex"), bytes };
}

async function connectError(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected a failure");
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** 1-byte ping-pongs over `s` (the peer echoes); returns each round trip in µs. */
async function pingPong(s: Duplex, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    s.write(Buffer.from([i & 0xff]));
    const b = await readN(s, 1);
    out.push(Number(process.hrtime.bigint() - t0) / 1000);
    expect(b[0]).toBe(i & 0xff);
  }
  return out;
}

describe("mesh: tunnels", () => {
  let f: MeshFixture;
  let echo: Awaited<ReturnType<typeof tcpServer>>;
  let shim: { link: LinkClient };
  let instanceId: string;
  let home: string;
  let shared: { transport: Transport; close(): void };
  /** What the shim's open_tunnel handler does; tests swap it. */
  let onOpen: (cmd: OpenTunnelCommand, signal: AbortSignal) => Promise<void>;
  const standard = async (cmd: OpenTunnelCommand, signal: AbortSignal) => {
    const t = await acceptTunnel({ transport: shared.transport, tunnelId: cmd.tunnelId, signal });
    await serveTunnelToTcp(t, cmd.host, cmd.port);
  };
  const open = (port: number, extra: { deadlineMs?: number } = {}) => f.mesh.tunnels.open({ instanceId, target: "host-port", port, ...extra });

  beforeAll(async () => {
    f = await startMesh();
    echo = await tcpServer((s) => s.pipe(s));
    ({ home, instanceId } = await enrollShim(f));
    const id = new IdentityStore(home).load();
    const made = agentTransport(id.serverUrl, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem, servername: id.servername });
    shared = { transport: made.transport, close: () => made.session.abort() };
    onOpen = standard;
    shim = simShim(home, [], {
      handlers: {
        ping: () => ({ agentTime: timestampNow() }),
        openTunnel: async (cmd, ctx) => {
          await onOpen(cmd, ctx.signal);
          return create(OpenTunnelResultSchema);
        },
      },
    });
    await shim.link.waitConnected();
  });
  afterAll(async () => {
    await shim?.link.close();
    shared?.close();
    await echo?.close();
    await f?.cleanup();
  });

  it("carries 1 byte there and back, then closes cleanly on both sides", async () => {
    const t = await open(echo.port);
    t.write(Buffer.from("x"));
    expect((await readN(t, 1)).toString()).toBe("x");
    t.end();
    expect((await readAll(t)).length).toBe(0);
    await until(() => f.mesh.tunnels.openCount === 0 && echo.conns() === 0, "both ends to close");
    expect(f.mesh.tunnels.pendingCount).toBe(0);
  });

  it("carries 50 MB each way intact (sha256) and reports throughput", async () => {
    const t = await open(echo.port);
    const t0 = performance.now();
    const [sent, got] = await Promise.all([writeRandom(t, 50 * MB), hashAll(t)]);
    const s = (performance.now() - t0) / 1000;
    expect(got.bytes).toBe(50 * MB);
    expect(got.sha256).toBe(sent);
    console.log(`[tunnel] 50 MB echoed through one tunnel in ${s.toFixed(2)} s: ${(50 / s).toFixed(1)} MB/s each way (${(100 / s).toFixed(1)} MB/s both ways)`);
    await until(() => f.mesh.tunnels.openCount === 0, "the tunnel to close");
  });

  it("passes half-closes both ways: each side keeps sending after the other's FIN", async () => {
    // Client → target: the target answers only after the client's FIN reached it.
    const replyAfterFin = await tcpServer((s) => {
      const parts: Buffer[] = [];
      s.on("data", (c: Buffer) => parts.push(c));
      s.on("end", () => s.end(`got ${Buffer.concat(parts).toString()} then FIN`));
    });
    const a = await open(replyAfterFin.port);
    a.end("hello");
    expect((await readAll(a)).toString()).toBe("got hello then FIN");

    // Target → client: the target sends a banner and FIN at once, then still reads the client.
    let heard = "";
    const finFirst = await tcpServer((s) => {
      s.end("banner");
      s.on("data", (c: Buffer) => (heard += c.toString()));
    });
    const b = await open(finFirst.port);
    expect((await readAll(b)).toString()).toBe("banner"); // EOF arrived while b is still writable
    expect(b.writable).toBe(true);
    b.end("still talking");
    await until(() => heard === "still talking" && finFirst.conns() === 0, "the target to read after its own FIN");
    await until(() => f.mesh.tunnels.openCount === 0, "the tunnels to close");
    await replyAfterFin.close();
    await finFirst.close();
  });

  it("runs 20 tunnels at once, each with its own bytes intact", async () => {
    const tunnels = await Promise.all(Array.from({ length: 20 }, () => open(echo.port)));
    const results = await Promise.all(tunnels.map(async (t) => Promise.all([writeRandom(t, MB), hashAll(t)])));
    for (const [sent, got] of results) expect(got).toEqual({ sha256: sent, bytes: MB });
    await until(() => f.mesh.tunnels.openCount === 0 && echo.conns() === 0, "all 20 to close");
  });

  it("refuses a tunnel's hello from another shim's certificate; the right shim still gets it", async () => {
    const other = await enrollShim(f);
    let refused: ConnectError | undefined;
    onOpen = async (cmd, signal) => {
      refused = await connectError(acceptTunnel({ home: other.home, tunnelId: cmd.tunnelId }));
      await standard(cmd, signal);
    };
    try {
      const t = await open(echo.port);
      expect(refused?.code).toBe(Code.PermissionDenied);
      expect(refused?.rawMessage).toBe(`shim ${other.instanceId} may not accept tunnel ${"x".repeat(0)}${refused?.rawMessage.match(/tunnel (\S+):/)?.[1]}: the server opened it for another agent.`);
      t.end("ok");
      expect((await readAll(t)).toString()).toBe("ok");
    } finally {
      onOpen = standard;
    }
  });

  it("refuses unknown tunnel ids, and a tunnel id a second time", async () => {
    const unknown = await connectError(acceptTunnel({ home, tunnelId: randomUUID() }));
    expect(unknown.code).toBe(Code.NotFound);
    expect(unknown.rawMessage).toMatch(/^Tunnel [0-9a-f-]{36} is unknown or expired/);
    let again: ConnectError | undefined;
    onOpen = async (cmd, signal) => {
      await standard(cmd, signal);
      again = await connectError(acceptTunnel({ transport: shared.transport, tunnelId: cmd.tunnelId }));
    };
    try {
      const t = await open(echo.port);
      expect(again?.code).toBe(Code.NotFound);
      t.end();
      await readAll(t);
    } finally {
      onOpen = standard;
    }
  });

  it("fails fast for a shim that is not connected, at the deadline for one that never dials, and with the shim's error for a refused port", async () => {
    const offline = await enrollShim(f); // enrolled, never connected
    const e1 = await connectError(f.mesh.tunnels.open({ instanceId: offline.instanceId, target: "ssh" }));
    expect(e1.code).toBe(Code.Unavailable);
    expect(e1.rawMessage).toMatch(new RegExp(`^shim ${offline.instanceId} is not connected to the server`));

    let heardCancel = false;
    onOpen = (_cmd, signal) => new Promise((_, reject) => signal.addEventListener("abort", () => ((heardCancel = true), reject(signal.reason))));
    try {
      const e2 = await connectError(open(echo.port, { deadlineMs: 300 }));
      expect(e2.code).toBe(Code.DeadlineExceeded);
      expect(e2.rawMessage).toMatch(/did not open tunnel \S+ within 300 ms/);
      expect(f.mesh.tunnels.pendingCount).toBe(0);
      await until(() => heardCancel, "the shim's handler to hear the cancel");
    } finally {
      onOpen = standard;
    }

    const closed = await tcpServer(() => {});
    const port = closed.port;
    await closed.close();
    const e3 = await connectError(open(port));
    expect(e3.code).toBe(Code.Unavailable);
    expect(e3.rawMessage).toMatch(/ECONNREFUSED/);
    expect(f.mesh.tunnels.pendingCount).toBe(0);
    await until(() => f.mesh.tunnels.openCount === 0, "the failed tunnel to close");
  });

  it("destroying the server's end closes the target connection; a target reset reaches the server as an error", async () => {
    const t = await open(echo.port);
    t.write("a");
    await readN(t, 1);
    expect(echo.conns()).toBe(1);
    t.destroy();
    await until(() => echo.conns() === 0 && f.mesh.tunnels.openCount === 0, "the target connection to close");

    const resetting = await tcpServer((s) => s.once("data", () => s.resetAndDestroy()));
    const r = await open(resetting.port);
    r.write("boom");
    const err = await new Promise<Error>((resolve) => r.once("error", resolve).resume());
    expect(err.name).toBe("TunnelError");
    expect(err.message).toMatch(/ECONNRESET/);
    await resetting.close();
  });

  it("applies backpressure: a reader that stops leaves the 50 MB at the source, not in the server", async () => {
    const total = 50 * MB;
    let flushed = 0; // bytes the source's socket accepted
    let sentHash = "";
    const source = await tcpServer((s) => {
      void (async () => {
        const h = createHash("sha256");
        for (let sent = 0; sent < total; ) {
          const chunk = randomBytes(Math.min(MB, total - sent));
          h.update(chunk);
          sent += chunk.length;
          const ok = s.write(chunk, () => (flushed += chunk.length));
          if (!ok) await new Promise((r) => s.once("drain", r));
        }
        sentHash = h.digest("hex");
        s.end();
      })();
    });
    const t = await open(source.port);
    t.pause(); // nobody reads
    const rss0 = process.memoryUsage().rss;
    // Wait until the source is stalled: its write callbacks stop advancing.
    let last = -1;
    let stableSince = Date.now();
    await until(() => {
      if (flushed !== last) {
        last = flushed;
        stableSince = Date.now();
      }
      return Date.now() - stableSince > 500;
    }, "the source to stall", 20_000);
    const rssGrowth = process.memoryUsage().rss - rss0;
    console.log(
      `[tunnel] reader paused: the source stalled after ${(flushed / MB).toFixed(1)} MB of 50 (kernel buffers + HTTP/2 windows); ` +
        `the server's tunnel holds ${(t.readableLength / 1024).toFixed(0)} KiB; process RSS grew ${(rssGrowth / MB).toFixed(1)} MB`,
    );
    expect(flushed).toBeLessThan(total / 4);
    expect(t.readableLength).toBeLessThanOrEqual(256 * 1024);
    // The reader resumes: everything arrives, intact.
    const got = await hashAll(t);
    expect(got.bytes).toBe(total);
    expect(got.sha256).toBe(sentHash);
    t.end(); // the source half-closed; now this side does too, and the connection ends
    await until(() => source.conns() === 0 && f.mesh.tunnels.openCount === 0, "the tunnel to close");
    await source.close();
  });

  it("applies backpressure to the writer too: a target that stops reading stops the server's writes", async () => {
    const total = 50 * MB;
    const received = createHash("sha256");
    let sink!: net.Socket;
    const target = await tcpServer((s) => {
      sink = s;
      s.pause(); // reads nothing until told
      s.on("data", (c: Buffer) => received.update(c));
    });
    const t = await open(target.port);
    let accepted = 0; // bytes whose write callback ran: handed on toward the agent
    const sent = createHash("sha256");
    const writing = (async () => {
      for (let n = 0; n < total; ) {
        const chunk = randomBytes(MB);
        sent.update(chunk);
        n += chunk.length;
        if (!t.write(chunk, () => (accepted += chunk.length))) await new Promise((r) => t.once("drain", r));
      }
      t.end();
    })();
    let last = -1;
    let stableSince = Date.now();
    await until(() => {
      if (accepted !== last) {
        last = accepted;
        stableSince = Date.now();
      }
      return Date.now() - stableSince > 500;
    }, "the writer to stall", 20_000);
    console.log(`[tunnel] target not reading: the server's writes stalled after ${(accepted / MB).toFixed(1)} MB of 50; ${(t.writableLength / 1024).toFixed(0)} KiB queued in the tunnel`);
    expect(accepted).toBeLessThan(total / 4);
    expect(t.writableLength).toBeLessThanOrEqual(2 * MB);
    sink.resume();
    await writing;
    await new Promise((r) => sink.once("end", r));
    expect(received.digest("hex")).toBe(sent.digest("hex"));
    sink.end();
    await readAll(t);
    await target.close();
  });

  it("revoking a shim closes its open tunnels", async () => {
    const other = await enrollShim(f);
    const s2 = simShim(other.home, [], {
      handlers: {
        ping: () => ({ agentTime: timestampNow() }),
        openTunnel: async (cmd) => {
          await serveTunnelToTcp(await acceptTunnel({ home: other.home, tunnelId: cmd.tunnelId }), cmd.host, cmd.port);
          return create(OpenTunnelResultSchema);
        },
      },
    });
    await s2.link.waitConnected();
    const t = await f.mesh.tunnels.open({ instanceId: other.instanceId, target: "host-port", port: echo.port });
    t.write("a");
    await readN(t, 1);
    const failed = new Promise<Error>((r) => t.once("error", r));
    f.mesh.revoke("shim", other.instanceId);
    expect(ConnectError.from(await failed).rawMessage).toBe(`Agent shim/${other.instanceId} is revoked. Enroll it again with a new join token.`);
    await until(() => echo.conns() === 0 && f.mesh.tunnels.openCount === 0, "the revoked shim's tunnel to close at the target");
    await s2.link.close();
  });

  it("measures the latency a tunnel adds to a 1-byte round trip (vs direct TCP)", async () => {
    const direct = net.connect({ port: echo.port, host: "127.0.0.1", noDelay: true });
    await new Promise((r) => direct.once("connect", r));
    const t = await open(echo.port);
    await pingPong(direct, 50);
    await pingPong(t, 50); // warm up
    const d = median(await pingPong(direct, 300));
    const viaTunnel = median(await pingPong(t, 300));
    console.log(`[tunnel] 1-byte round trip, median of 300: direct TCP ${d.toFixed(0)} µs, through the tunnel ${viaTunnel.toFixed(0)} µs (+${(viaTunnel - d).toFixed(0)} µs)`);
    direct.end();
    t.end();
    await readAll(t);
  });
});
