// Connections handed over as byte streams (what a tunnel does), and the session lifecycle driven
// by ssh2's own client: pty size and window-change, signals, keepalive and login grace teardown.
import net from "node:net";
import { Duplex, PassThrough } from "node:stream";
import ssh2 from "ssh2";
import type { ClientChannel, ConnectConfig, ExecOptions } from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authorizedKeyMatches, createShimSshServer, type ShimSshServer, type ShimSshServerOptions } from "../../agent-shim/src/ssh/index.js";
import { docker, requireTestImages, TEST_CONTAINER_LABEL, TEST_IMAGES } from "../helpers/docker.js";
import { execIn, makeClientKey, runSsh, sshBaseArgs, startTaskContainer, tempDir, type ClientKey, type TaskContainer } from "./ssh-harness.js";

const { Client } = ssh2;

let tmp: ReturnType<typeof tempDir>;
let key: ClientKey;
let privateKey: string;
let bb: TaskContainer;
let glibc: TaskContainer;

beforeAll(async () => {
  await requireTestImages();
  tmp = tempDir("dstack-ssh-conn-");
  key = makeClientKey(tmp.dir, "user");
  privateKey = (await import("node:fs")).readFileSync(key.path, "utf8");
  [bb, glibc] = await Promise.all([startTaskContainer(TEST_IMAGES.busybox, "bridge"), startTaskContainer(TEST_IMAGES.glibc, "bridge")]);
});

afterAll(async () => {
  await Promise.all([bb?.remove(), glibc?.remove()]);
  tmp?.cleanup();
});

/** A server whose logins need the test key and a tunnel-bound task ("task-bb" / "task-glibc"). */
function makeServer(extra: Partial<ShimSshServerOptions> = {}): ShimSshServer {
  return createShimSshServer({
    hostKeyPath: `${tmp.dir}/host_key`,
    docker: docker(),
    async resolveLogin({ publicKey, taskId }) {
      if (!authorizedKeyMatches([key.pub], publicKey)) return null;
      if (taskId === "task-bb") return { containerId: bb.id, networkMode: "bridge", containerIp: bb.ip };
      if (taskId === "task-glibc") return { containerId: glibc.id, networkMode: "bridge", containerIp: glibc.ip };
      return null;
    },
    ...extra,
  });
}

/** Two connected in-memory streams, each a Duplex over a pair of PassThroughs (like a tunnel's). */
function duplexPair(): [Duplex, Duplex] {
  const aToB = new PassThrough();
  const bToA = new PassThrough();
  const a = Duplex.from({ readable: bToA, writable: aToB });
  const b = Duplex.from({ readable: aToB, writable: bToA });
  // Destroying a Duplex.from() stream aborts its inner streams, and so errors the other end.
  for (const s of [aToB, bToA, a, b]) s.on("error", () => undefined);
  return [a, b];
}

/** Two connected streams whose link can be cut: after `cut()` bytes are dropped both ways, silently. */
function gatedPair(): { a: Duplex; b: Duplex; cut(): void } {
  let open = true;
  const make = (peer: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        if (open) peer().push(chunk);
        cb();
      },
      final(cb) {
        if (open) peer().push(null);
        cb();
      },
      // Like a TCP reset: destroying one end destroys the other.
      destroy(err, cb) {
        if (open) setImmediate(() => peer().destroy());
        cb(err);
      },
    });
  const a: Duplex = make(() => b);
  const b: Duplex = make(() => a);
  return { a, b, cut: () => void (open = false) };
}

/** An ssh2 client connected over `sock`, authenticated with the test key. */
function connectClient(sock: Duplex, extra: Partial<ConnectConfig> = {}): Promise<InstanceType<typeof Client>> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.once("ready", () => resolve(c))
      .once("error", reject)
      .connect({ sock: sock as never, username: "root", privateKey, hostVerifier: () => true, readyTimeout: 60_000, ...extra });
  });
}

interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function collect(ch: ClientChannel): Promise<ExecResult> {
  let stdout = "";
  let stderr = "";
  ch.on("data", (d: Buffer) => (stdout += d.toString()));
  ch.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => ch.once("close", (code: number | null) => resolve({ code, stdout, stderr })));
}

function execOn(c: InstanceType<typeof Client>, command: string, opts: ExecOptions = {}): Promise<ClientChannel> {
  return new Promise((resolve, reject) => c.exec(command, opts, (err, ch) => (err ? reject(err) : resolve(ch))));
}

function waitFor(ch: ClientChannel, text: string): Promise<string> {
  return new Promise((resolve) => {
    let seen = "";
    const onData = (d: Buffer) => {
      seen += d.toString();
      if (seen.includes(text)) {
        ch.off("data", onData);
        resolve(seen);
      }
    };
    ch.on("data", onData);
  });
}

/** Polls `ps` in the container until no process command line contains `marker`. */
async function waitUntilGone(container: TaskContainer, marker: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const { output } = await execIn(container.container, ["ps", "-o", "args"]);
    if (!output.includes(marker)) return;
  }
  throw new Error(`a process with ${marker} is still running`);
}

describe("handleConnection", () => {
  it("serves a TCP socket handed over with a bound task, like listen does", async () => {
    const server = makeServer();
    const tunnel = net.createServer((sock) => server.handleConnection(sock, { taskId: "task-glibc" }));
    await new Promise<void>((r) => tunnel.listen(0, "127.0.0.1", r));
    const port = (tunnel.address() as net.AddressInfo).port;
    try {
      const r = await runSsh([...sshBaseArgs(key.path, port), "anyone@127.0.0.1", 'echo "hi from ${BASH_VERSION:+bash}"; exit 4']);
      expect(r).toMatchObject({ code: 4, stdout: "hi from bash\n" });
    } finally {
      await server.close();
      await new Promise((r) => tunnel.close(r));
    }
  });

  it("serves a PassThrough-based duplex carrying OpenSSH's bytes", async () => {
    const server = makeServer();
    // TCP only between ssh and this relay; the server sees an in-memory Duplex, as from a tunnel.
    const relay = net.createServer((sock) => {
      const [near, far] = duplexPair();
      server.handleConnection(far, { taskId: "task-bb" });
      sock.pipe(near).pipe(sock);
      sock.on("close", () => near.destroy());
      near.on("close", () => sock.destroy());
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const port = (relay.address() as net.AddressInfo).port;
    try {
      const r = await runSsh([...sshBaseArgs(key.path, port), "root@127.0.0.1", "cat; echo done >&2"], { input: "piped\n" });
      expect(r).toMatchObject({ code: 0, stdout: "piped\n", stderr: "done\n" });
    } finally {
      await server.close();
      await new Promise((r) => relay.close(r));
    }
  });

  it("serves ssh2's client over an in-memory stream, and closes the stream when the client ends", async () => {
    const server = makeServer();
    const [clientSide, serverSide] = duplexPair();
    server.handleConnection(serverSide, { taskId: "task-bb" });
    const c = await connectClient(clientSide);
    const r = await collect(await execOn(c, "echo in-memory; exit 3"));
    expect(r).toMatchObject({ code: 3, stdout: "in-memory\n" });
    const closed = new Promise((res) => serverSide.once("close", res));
    c.end();
    await closed;
    await server.close();
  });

  it("runs several sessions at once over one connection", async () => {
    const server = makeServer();
    const [clientSide, serverSide] = duplexPair();
    server.handleConnection(serverSide, { taskId: "task-bb" });
    const c = await connectClient(clientSide);
    try {
      const results = await Promise.all([1, 2, 3, 4].map(async (i) => collect(await execOn(c, `sleep 0.2; echo session-${i}; exit ${i}`))));
      expect(results.map((r) => [r.code, r.stdout])).toEqual([1, 2, 3, 4].map((i) => [i, `session-${i}\n`]));
    } finally {
      c.end();
      await server.close();
    }
  });

  it("refuses a login whose task the tunnel does not bind", async () => {
    const server = makeServer();
    const [clientSide, serverSide] = duplexPair();
    server.handleConnection(serverSide, { taskId: "task-unknown" });
    await expect(connectClient(clientSide)).rejects.toThrow(/authentication methods failed/);
    await server.close();
  });
});

describe("terminals and signals", () => {
  it("gives the pty the requested size and follows window-change", async () => {
    const server = makeServer();
    const [clientSide, serverSide] = duplexPair();
    server.handleConnection(serverSide, { taskId: "task-glibc" });
    const c = await connectClient(clientSide);
    try {
      const sized = await collect(await execOn(c, "stty size", { pty: { rows: 40, cols: 100, term: "xterm" } }));
      expect(sized.stdout.trim()).toBe("40 100");
      // The trap prints the size when the resize lands (SIGWINCH), so nothing here races it.
      const ch = await execOn(c, "trap 'stty size' WINCH; echo READY; while :; do sleep 0.05; done", { pty: { rows: 24, cols: 80, term: "xterm" } });
      const result = collect(ch);
      await waitFor(ch, "READY");
      ch.setWindow(50, 120, 0, 0);
      await waitFor(ch, "50 120");
      ch.signal("KILL");
      expect((await result).code).toBe(137);
    } finally {
      c.end();
      await server.close();
    }
  });

  it("delivers an SSH signal request to the process", async () => {
    const server = makeServer();
    const [clientSide, serverSide] = duplexPair();
    server.handleConnection(serverSide, { taskId: "task-glibc" });
    const c = await connectClient(clientSide);
    try {
      const ch = await execOn(c, "trap 'echo got-term; exit 9' TERM; echo READY; while :; do sleep 0.05; done");
      const result = collect(ch);
      await waitFor(ch, "READY");
      // Signals are best effort (the shim signals the exec's host PID); under a loaded host the
      // first request can come before Docker reports the exec's PID, so ask until it lands.
      let settled = false;
      void result.finally(() => (settled = true));
      for (let i = 0; i < 40 && !settled; i++) {
        ch.signal("TERM");
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(await result).toMatchObject({ code: 9, stdout: "READY\ngot-term\n" });
    } finally {
      c.end();
      await server.close();
    }
  });

  it("hangs up the process when the client disconnects mid-command", async () => {
    const server = makeServer();
    const [clientSide, serverSide] = duplexPair();
    server.handleConnection(serverSide, { taskId: "task-bb" });
    const c = await connectClient(clientSide);
    const ch = await execOn(c, "echo READY; exec sleep 4141");
    await waitFor(ch, "READY");
    c.end();
    await waitUntilGone(bb, "sleep 4141");
    await server.close();
  });
});

describe("failures", () => {
  it("reports a container that is not running on stderr with exit status 255", async () => {
    const stopped = await docker().createContainer({ Image: TEST_IMAGES.busybox, Cmd: ["sleep", "3600"], Labels: { [TEST_CONTAINER_LABEL]: "1" } });
    const server = makeServer({ resolveLogin: async () => ({ containerId: stopped.id, networkMode: "bridge", containerIp: "" }) });
    const [clientSide, serverSide] = duplexPair();
    server.handleConnection(serverSide);
    try {
      const c = await connectClient(clientSide);
      const r = await collect(await execOn(c, "echo hi"));
      expect(r.code).toBe(255);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^dstack-shim: cannot start a process in the container: .*not running/);
      c.end();
    } finally {
      await server.close();
      await stopped.remove({ force: true });
    }
  });
});

describe("teardown", () => {
  it("drops a client that stops answering keepalives and ends its session", async () => {
    const server = makeServer({ keepaliveIntervalMs: 100, keepaliveCountMax: 2 });
    const { a: clientSide, b: serverSide, cut } = gatedPair();
    server.handleConnection(serverSide, { taskId: "task-bb" });
    const c = await connectClient(clientSide);
    c.on("error", () => undefined);
    const ch = await execOn(c, "echo READY; exec sleep 4242");
    await waitFor(ch, "READY");
    // The link goes silent both ways, as when a laptop drops off the network.
    const closed = new Promise((res) => serverSide.once("close", res));
    cut();
    await closed;
    await waitUntilGone(bb, "sleep 4242");
    c.destroy();
    await server.close();
  });

  it("drops a connection that does not authenticate within the login grace time", async () => {
    const server = makeServer({ loginGraceMs: 200 });
    const [clientSide, serverSide] = duplexPair();
    server.handleConnection(serverSide, { taskId: "task-bb" });
    clientSide.write("SSH-2.0-idle_client\r\n");
    clientSide.resume();
    await new Promise((res) => serverSide.once("close", res));
    await server.close();
  });

  it("disconnects after too many failed attempts", async () => {
    const server = makeServer({ maxAuthTries: 2 });
    const others = [1, 2, 3].map((i) => makeClientKey(tmp.dir, `other${i}`));
    const tunnel = net.createServer((sock) => server.handleConnection(sock, { taskId: "task-bb" }));
    await new Promise<void>((r) => tunnel.listen(0, "127.0.0.1", r));
    const port = (tunnel.address() as net.AddressInfo).port;
    try {
      const ids = others.flatMap((k) => ["-i", k.path]);
      const r = await runSsh([...sshBaseArgs(key.path, port, "INFO").filter((a) => a !== key.path && a !== "-i"), ...ids, "root@127.0.0.1", "true"]);
      expect(r.code).toBe(255);
      expect(r.stderr).not.toContain("Permission denied (publickey)"); // cut off before the third key
    } finally {
      await server.close();
      await new Promise((res) => tunnel.close(res));
    }
  });

  it("close() ends live sessions and stops new connections", async () => {
    const server = makeServer();
    const { a: clientSide, b: serverSide } = gatedPair();
    server.handleConnection(serverSide, { taskId: "task-bb" });
    const c = await connectClient(clientSide);
    c.on("error", () => undefined);
    const ch = await execOn(c, "echo READY; exec sleep 4343");
    await waitFor(ch, "READY");
    const clientClosed = new Promise<void>((res) => c.once("close", () => res()));
    await server.close();
    await clientClosed;
    await waitUntilGone(bb, "sleep 4343");
    const [, late] = duplexPair();
    const lateClosed = new Promise((res) => late.once("close", res));
    server.handleConnection(late);
    await lateClosed;
  });
});
