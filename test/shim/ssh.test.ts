// The shim's embedded SSH server against real Docker containers and the real OpenSSH client:
// sessions run through docker exec in images without sshd, -L forwards reach the container's
// ports, -J hops through the same server, and only properly signed, authorised keys get in.
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { authorizedKeyMatches, createShimSshServer, type LoginTarget, type ShimSshServer } from "../../agent-shim/src/ssh/index.js";
import { docker, requireTestImages, TEST_IMAGES } from "../helpers/docker.js";
import {
  execIn,
  freePort,
  makeClientKey,
  runSsh,
  spawnSsh,
  sshBaseArgs,
  startTaskContainer,
  tempDir,
  waitForOutput,
  type ClientKey,
  type TaskContainer,
} from "./ssh-harness.js";

const logs: Array<{ level: string; message: string; fields?: Record<string, unknown> }> = [];
const logger = {
  info: (message: string, fields?: Record<string, unknown>) => void logs.push({ level: "info", message, fields }),
  warn: (message: string, fields?: Record<string, unknown>) => void logs.push({ level: "warn", message, fields }),
};

let tmp: ReturnType<typeof tempDir>;
let good: ClientKey;
let wrong: ClientKey;
let rsa: ClientKey;
let busybox: TaskContainer; // host networking
let glibc: TaskContainer; // bridge networking
let bridged: TaskContainer; // busybox, bridge networking
let server: ShimSshServer;
let port: number;
let hostKeyPath: string;

/** User name → container; the authorised keys are the "project key" and the user's key. */
function targets(): Record<string, LoginTarget> {
  return {
    bb: { containerId: busybox.id, networkMode: "host" },
    glibc: { containerId: glibc.id, networkMode: "bridge", containerIp: glibc.ip },
    bridged: { containerId: bridged.id, networkMode: "bridge", containerIp: bridged.ip },
    nobody: { containerId: glibc.id, containerUser: "nobody", networkMode: "bridge", containerIp: glibc.ip },
  };
}

beforeAll(async () => {
  await requireTestImages();
  tmp = tempDir("dstack-ssh-");
  good = makeClientKey(tmp.dir, "good");
  wrong = makeClientKey(tmp.dir, "wrong");
  rsa = makeClientKey(tmp.dir, "rsa", "rsa", 3072);
  [busybox, glibc, bridged] = await Promise.all([
    startTaskContainer(TEST_IMAGES.busybox, "host"),
    startTaskContainer(TEST_IMAGES.glibc, "bridge"),
    startTaskContainer(TEST_IMAGES.busybox, "bridge"),
  ]);
  hostKeyPath = join(tmp.dir, "shim", "ssh_host_ed25519_key");
  server = createShimSshServer({
    hostKeyPath,
    docker: docker(),
    logger,
    async resolveLogin({ username, publicKey, taskId }) {
      if (!authorizedKeyMatches([good.pub, rsa.pub], publicKey)) return null;
      // A tunnel binds the task; the user name then only picks the container user.
      if (taskId) return taskId === "task-bb" ? targets().bb! : null;
      return targets()[username] ?? null;
    },
    jumpHost: { authorize: (username, publicKey) => username === "jump" && authorizedKeyMatches([good.pub], publicKey) },
  });
  port = await server.listen(0, "127.0.0.1");
});

afterAll(async () => {
  await server?.close();
  await Promise.all([busybox?.remove(), glibc?.remove(), bridged?.remove()]);
  tmp?.cleanup();
});

beforeEach(() => {
  logs.length = 0;
});

interface SshOpts {
  input?: string;
  env?: NodeJS.ProcessEnv;
  key?: string;
  logLevel?: string;
}
/** `ssh [args] user@host` (no command: a shell). */
const ssh = (user: string, args: string[], opts: SshOpts = {}) =>
  runSsh([...sshBaseArgs(opts.key ?? good.path, port, opts.logLevel), ...args, `${user}@127.0.0.1`], opts);
/** `ssh [args] user@host command` */
const sshCmd = (user: string, command: string, opts: SshOpts & { args?: string[] } = {}) =>
  runSsh([...sshBaseArgs(opts.key ?? good.path, port, opts.logLevel), ...(opts.args ?? []), `${user}@127.0.0.1`, command], opts);

describe("commands (exec)", () => {
  it("runs a command in a busybox container and returns its output and exit 0", async () => {
    const r = await sshCmd("bb", "echo hi");
    expect(r).toMatchObject({ code: 0, stdout: "hi\n", stderr: "" });
  });

  it("returns the command's exit status", async () => {
    expect((await sshCmd("bb", "exit 7")).code).toBe(7);
    expect((await sshCmd("glibc", "exit 42")).code).toBe(42);
  });

  it("keeps stdout and stderr apart", async () => {
    const r = await sshCmd("glibc", "echo out; echo err >&2; echo out2");
    expect(r).toMatchObject({ code: 0, stdout: "out\nout2\n", stderr: "err\n" });
  });

  it("pipes stdin to the command and delivers EOF", async () => {
    const input = "line one\nline two\n".repeat(2000);
    const r = await sshCmd("bb", "cat", { input });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(input);
    const wc = await sshCmd("glibc", "wc -c", { input });
    expect(wc.stdout.trim()).toBe(String(Buffer.byteLength(input)));
  });

  it("uses bash when the image has it and sh otherwise", async () => {
    expect((await sshCmd("glibc", 'echo "${BASH_VERSION:+bash}"')).stdout).toBe("bash\n");
    expect((await sshCmd("bb", 'echo "${BASH_VERSION:-nobash}"')).stdout).toBe("nobash\n");
  });

  it("passes environment variables sent with SetEnv", async () => {
    const r = await sshCmd("glibc", 'echo "$FOO/$BAR"', { args: ["-o", 'SetEnv=FOO=bar "BAR=baz qux"'] });
    expect(r).toMatchObject({ code: 0, stdout: "bar/baz qux\n" });
  });

  it("runs as the container user the login names", async () => {
    expect((await sshCmd("nobody", "id -un")).stdout).toBe("nobody\n");
    expect((await sshCmd("glibc", "id -un")).stdout).toBe("root\n");
  });

  it("sets SSH_CONNECTION for the command", async () => {
    const r = await sshCmd("bb", 'echo "$SSH_CONNECTION"');
    expect(r.stdout).toMatch(new RegExp(`^127\\.0\\.0\\.1 \\d+ 127\\.0\\.0\\.1 ${port}\\n$`));
  });

  it("streams large output intact and in order", async () => {
    const r = await sshCmd("bb", "seq 1 300000; echo done >&2");
    expect(r.code).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines.length).toBe(300001);
    expect(lines[0]).toBe("1");
    expect(lines[299999]).toBe("300000");
    expect(r.stderr).toBe("done\n");
  });

  it("runs a shell without a pty that reads its commands from stdin (ssh -T)", async () => {
    const r = await ssh("glibc", ["-T"], { input: "echo from-stdin; test -t 0 || echo no-tty; exit 5\n" });
    expect(r).toMatchObject({ code: 5, stdout: "from-stdin\nno-tty\n" });
  });

  it("ends the session with exit status 137 when the container dies", async () => {
    const victim = await startTaskContainer(TEST_IMAGES.busybox, "bridge");
    try {
      const authorised = createShimSshServer({
        hostKeyPath,
        docker: docker(),
        resolveLogin: async () => ({ containerId: victim.id, networkMode: "bridge", containerIp: victim.ip }),
      });
      const p = await authorised.listen(0, "127.0.0.1");
      const { child, done } = spawnSsh([...sshBaseArgs(good.path, p), "root@127.0.0.1", "echo started; sleep 60"]);
      await waitForOutput(child, "started");
      await victim.container.kill();
      const r = await done;
      expect(r.code).toBe(137);
      await authorised.close();
    } finally {
      await victim.remove();
    }
  });
});

describe("interactive shells (pty)", () => {
  it("gives `ssh -tt` a login shell with TERM set, in the busybox image", async () => {
    const r = await ssh("bb", ["-tt"], { input: "echo term=$TERM; exit 3\n", env: { TERM: "xterm-256color" } });
    expect(r.code).toBe(3);
    expect(r.stdout).toContain("term=xterm-256color");
  });

  it("gives `ssh -tt` bash in the glibc image, and a TTY", async () => {
    const r = await ssh("glibc", ["-tt"], { input: 'echo "shell=${BASH_VERSION:+bash} tty=$(tty)"; exit\n', env: { TERM: "vt100" } });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/shell=bash tty=\/dev\/pts\/\d+/);
  });

  it("runs a command on a pty with `ssh -t`", async () => {
    const r = await sshCmd("glibc", "test -t 0 && test -t 1 && echo is-a-tty", { args: ["-tt"] });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("is-a-tty\r\n");
  });
});

describe("port forwarding (direct-tcpip)", () => {
  it("forwards `ssh -L` to an HTTP server in a host-networked container", async () => {
    const httpPort = await freePort();
    const setup = await execIn(busybox.container, ["sh", "-c", `mkdir -p /www && echo hello-from-busybox > /www/index.html && httpd -p 127.0.0.1:${httpPort} -h /www`]);
    expect(setup.code).toBe(0);
    const localPort = await freePort();
    const { child, done } = spawnSsh([
      ...sshBaseArgs(good.path, port),
      "-o", "ExitOnForwardFailure=yes",
      "-L", `127.0.0.1:${localPort}:localhost:${httpPort}`,
      "bb@127.0.0.1", "echo forwarding; sleep 60",
    ]);
    try {
      // ssh sets up -L listeners before it starts the session, so "forwarding" means ready.
      await waitForOutput(child, "forwarding");
      const res = await fetch(`http://127.0.0.1:${localPort}/index.html`);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe("hello-from-busybox\n");
    } finally {
      child.kill();
      await done;
      await execIn(busybox.container, ["sh", "-c", `pkill -f "httpd -p 127.0.0.1:${httpPort}" || killall httpd || true`]);
    }
  });

  it("forwards localhost to the container's IP under bridge networking", async () => {
    const setup = await execIn(bridged.container, ["sh", "-c", "mkdir -p /www && echo hello-from-bridge > /www/index.html && httpd -p 8080 -h /www"]);
    expect(setup.code).toBe(0);
    const localPort = await freePort();
    const { child, done } = spawnSsh([
      ...sshBaseArgs(good.path, port),
      "-o", "ExitOnForwardFailure=yes",
      "-L", `127.0.0.1:${localPort}:127.0.0.1:8080`,
      "bridged@127.0.0.1", "echo forwarding; sleep 60",
    ]);
    try {
      await waitForOutput(child, "forwarding");
      const res = await fetch(`http://127.0.0.1:${localPort}/`);
      expect(await res.text()).toBe("hello-from-bridge\n");
    } finally {
      child.kill();
      await done;
    }
  });

  it("refuses a forward to a closed port with an open failure", async () => {
    const closed = await freePort();
    const r = await runSsh([...sshBaseArgs(good.path, port), "-W", `127.0.0.1:${closed}`, "bb@127.0.0.1"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/stdio forwarding failed|open failed/i);
  });
});

describe("jump host (ssh -J)", () => {
  it("hops through the server to itself and runs the command in the target", async () => {
    // Command-line options do not reach the jump hop; a config file (passed on with -F) does.
    const cfg = join(tmp.dir, "jump_config");
    writeFileSync(cfg, `Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  IdentitiesOnly yes\n  IdentityFile ${good.path}\n  BatchMode yes\n  LogLevel ERROR\n`);
    const r = await runSsh(["-F", cfg, "-J", `jump@127.0.0.1:${port}`, "-p", String(port), "bb@127.0.0.1", "echo via-jump"]);
    expect(r).toMatchObject({ code: 0, stdout: "via-jump\n" });
    // Two logins: the hop (jump-only) and the target (a task login) over the forwarded channel.
    expect(logs.filter((l) => l.message === "ssh login").map((l) => l.fields?.kind)).toEqual(["jump", "task"]);
  });

  it("gives a jump-only login no shell and no other forwards", async () => {
    const shell = await sshCmd("jump", "echo nope");
    expect(shell.code).toBe(255);
    expect(shell.stdout).toBe("");
    const fwd = await runSsh([...sshBaseArgs(good.path, port), "-W", "1.1.1.1:80", "jump@127.0.0.1"]);
    expect(fwd.code).not.toBe(0);
    expect(logs.some((l) => l.message === "ssh forward refused: jump-only login")).toBe(true);
  });
});

describe("authentication", () => {
  it("refuses a key that is not authorised", async () => {
    const r = await sshCmd("bb", "echo hi", { key: wrong.path });
    expect(r.code).toBe(255);
    expect(r.stderr).toContain("Permission denied (publickey)");
    expect(logs.some((l) => l.message === "ssh key not authorised")).toBe(true);
  });

  it("refuses an authorised key for an unknown user", async () => {
    const r = await sshCmd("someone-else", "echo hi");
    expect(r.code).toBe(255);
  });

  it("offers no password or keyboard-interactive auth, and refuses a password sent anyway", async () => {
    const askpass = join(tmp.dir, "askpass.sh");
    writeFileSync(askpass, "#!/bin/sh\necho hunter2\n", { mode: 0o755 });
    const r = await runSsh(
      [
        "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "NumberOfPasswordPrompts=1",
        "-p", String(port), "bb@127.0.0.1", "echo hi",
      ],
      { env: { SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: "force", DISPLAY: ":0" } },
    );
    expect(r.code).toBe(255);
    expect(r.stderr).toContain("Permission denied (publickey)");
    // ssh2's client sends a password even though the server lists only publickey.
    const { Client } = (await import("ssh2")).default;
    const err = await new Promise<Error>((resolve) => {
      const c = new Client();
      c.on("ready", () => resolve(new Error("unexpectedly authenticated")))
        .on("error", (e) => resolve(e))
        .connect({ host: "127.0.0.1", port, username: "bb", password: "hunter2", authHandler: ["password"] as never, hostVerifier: () => true });
    });
    expect(err.message).toMatch(/authentication methods failed/i);
    expect(logs.some((l) => l.message === "ssh auth method refused" && l.fields?.method === "password")).toBe(true);
  });

  it("accepts an RSA key with rsa-sha2-512 and refuses SHA-1 (ssh-rsa) signatures", async () => {
    expect(await sshCmd("bb", "echo rsa", { key: rsa.path })).toMatchObject({ code: 0, stdout: "rsa\n" });
    const sha1 = await sshCmd("bb", "echo rsa", { key: rsa.path, args: ["-o", "PubkeyAcceptedAlgorithms=ssh-rsa"] });
    expect(sha1.code).toBe(255);
  });

  it("negotiates nothing weaker than the modern set", async () => {
    const cbc = await sshCmd("bb", "true", { logLevel: "INFO", args: ["-o", "Ciphers=aes128-ctr,aes256-cbc"] });
    expect(cbc.code).toBe(255);
    expect(cbc.stderr).toMatch(/no matching cipher/);
    const nist = await sshCmd("bb", "true", { logLevel: "INFO", args: ["-o", "KexAlgorithms=ecdh-sha2-nistp256,diffie-hellman-group14-sha256"] });
    expect(nist.stderr).toMatch(/no matching key exchange/);
    const hk = await sshCmd("bb", "true", { logLevel: "INFO", args: ["-o", "HostKeyAlgorithms=rsa-sha2-512,ecdsa-sha2-nistp256"] });
    expect(hk.stderr).toMatch(/no matching host key type/);
  });

  it("refuses sftp cleanly", async () => {
    const r = await runSsh(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i", good.path, "-P", String(port), "-b", "-", "bb@127.0.0.1"], {
      command: "sftp",
      input: "ls\n",
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/subsystem request failed/);
  });
});

/** `ssh-keyscan` piped into `ssh-keygen -l`, run asynchronously: the server answers from this process. */
async function scanFingerprint(p: number): Promise<string> {
  const { stdout } = await promisify(execFile)("sh", ["-c", `ssh-keyscan -t ed25519 -p ${p} 127.0.0.1 2>/dev/null | ssh-keygen -lf -`], { encoding: "utf8" });
  return stdout;
}

describe("host key", () => {
  it("is an ed25519 key stored 0600 and served as the host key", async () => {
    expect(statSync(hostKeyPath).mode & 0o777).toBe(0o600);
    expect(await scanFingerprint(port)).toContain(server.hostKey.fingerprint);
    expect(execFileSync("ssh-keygen", ["-lf", hostKeyPath], { encoding: "utf8" })).toContain(server.hostKey.fingerprint);
  });

  it("stays the same across restarts", async () => {
    const again = createShimSshServer({ hostKeyPath, docker: docker(), resolveLogin: async () => null });
    expect(again.hostKey.fingerprint).toBe(server.hostKey.fingerprint);
    const p = await again.listen(0, "127.0.0.1");
    expect(await scanFingerprint(p)).toContain(server.hostKey.fingerprint);
    await again.close();
    const fresh = createShimSshServer({ hostKeyPath: join(tmp.dir, "other", "key"), docker: docker(), resolveLogin: async () => null });
    expect(fresh.hostKey.fingerprint).not.toBe(server.hostKey.fingerprint);
  });
});
