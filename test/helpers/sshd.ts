// Real OpenSSH servers for tests: Debian's /usr/sbin/sshd in the foreground on a 127.0.0.1 port,
// with a temp config (its own host key, one authorized_keys file, public keys only, root may log
// in, no PAM, no strict modes for temp dirs). The SSH-fleet e2e tests use several as "hosts"; the
// runner's git-over-SSH tests use one as a git server. Needs root (sshd switches to the user).
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { connect, createServer, type AddressInfo } from "node:net";
import { join } from "node:path";

export interface SshdOptions {
  /** Where the config and pid files go (named by port, so several sshds may share it). */
  dir: string;
  /** Private host key file. */
  hostKey: string;
  /** The authorized_keys file; sshd reads it at each login, so a test may add keys later. */
  authorizedKeys: string;
  /** Loopback port; a free one when left out. The same port may be reused after stop(). */
  port?: number;
  /** Variables every session on this "host" gets (sshd's SetEnv), e.g. a PATH with wrapper commands first. */
  env?: Record<string, string>;
}

export interface Sshd {
  port: number;
  process: ChildProcess;
  /** SIGTERM, then waits for the exit (at once if it has already exited). */
  stop(): Promise<void>;
}

/** A new ed25519 key pair without passphrase at `file` (and `file`.pub); returns the private key. */
export function sshKeygen(file: string): string {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", file]);
  return readFileSync(file, "utf8");
}

/** A free loopback port (closed again; sshd binds it next). */
async function freeLoopbackPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((ok) => s.listen(0, "127.0.0.1", ok));
  const { port } = s.address() as AddressInfo;
  await new Promise((ok) => s.close(ok));
  return port;
}

/** Starts sshd and resolves once its port accepts connections. */
export async function startSshd(o: SshdOptions): Promise<Sshd> {
  const port = o.port ?? (await freeLoopbackPort());
  const env = Object.entries(o.env ?? {});
  const config = join(o.dir, `sshd-${port}.conf`);
  await writeFile(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${o.hostKey}`,
      `AuthorizedKeysFile ${o.authorizedKeys}`,
      `PidFile ${join(o.dir, `sshd-${port}.pid`)}`,
      "UsePAM no",
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "StrictModes no",
      "LogLevel ERROR",
      ...(env.length ? [`SetEnv ${env.map(([k, v]) => `${k}=${v}`).join(" ")}`] : []),
      "",
    ].join("\n"),
  );
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 }); // sshd's privilege separation dir
  const p = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", config], { stdio: ["ignore", "ignore", "pipe"] });
  let errText = "";
  p.stderr!.on("data", (d: Buffer) => (errText += d.toString()));
  for (let i = 0; ; i++) {
    if (p.exitCode !== null) throw new Error(`sshd exited: ${errText}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) break;
    if (i > 100) {
      p.kill("SIGTERM");
      throw new Error(`sshd did not listen on 127.0.0.1:${port}: ${errText}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    process: p,
    stop: () =>
      new Promise<void>((ok) => {
        if (p.exitCode !== null || p.signalCode !== null) return ok();
        p.once("exit", () => ok());
        p.kill("SIGTERM");
      }),
  };
}
