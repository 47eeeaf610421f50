// A real git server over SSH for tests: Debian's OpenSSH sshd on a loopback port (temp config,
// its own host key, one authorized test key, login as the test's user: root) whose exec requests
// run Debian's git-upload-pack on bare repositories made by git-http.ts's makeTestRepo.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect, createServer, type AddressInfo } from "node:net";
import { userInfo } from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface GitSshd {
  port: number;
  /** The user the key logs in as. */
  user: string;
  /** Private key (OpenSSH format) the server accepts, and one it does not. */
  key: string;
  wrongKey: string;
  close(): Promise<void>;
}

const keygen = (file: string): string => {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", file]);
  return readFileSync(file, "utf8");
};

/** A free loopback port (closed again; sshd binds it next). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((ok) => s.listen(0, "127.0.0.1", ok));
  const { port } = s.address() as AddressInfo;
  await new Promise((ok) => s.close(ok));
  return port;
}

/** Starts sshd on 127.0.0.1; needs root (sshd switches to the logged-in user). */
export async function startGitSshd(): Promise<GitSshd> {
  const work = mkdtempSync(join(tmpdir(), "git-sshd-"));
  keygen(join(work, "host_key"));
  const key = keygen(join(work, "id_good"));
  const wrongKey = keygen(join(work, "id_bad"));
  writeFileSync(join(work, "authorized_keys"), readFileSync(join(work, "id_good.pub")));
  const port = await freePort();
  const config = join(work, "sshd.conf");
  writeFileSync(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${join(work, "host_key")}`,
      `AuthorizedKeysFile ${join(work, "authorized_keys")}`,
      `PidFile ${join(work, "sshd.pid")}`,
      "UsePAM no",
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "StrictModes no",
      "LogLevel ERROR",
      "",
    ].join("\n"),
  );
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 }); // sshd's privilege separation dir
  const p: ChildProcess = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", config], { stdio: ["ignore", "ignore", "pipe"] });
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
    if (i > 100) throw new Error(`sshd did not listen on 127.0.0.1:${port}: ${errText}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    user: userInfo().username,
    key,
    wrongKey,
    close: () =>
      new Promise<void>((ok) => {
        if (p.exitCode !== null) return ok();
        p.once("exit", () => ok());
        p.kill("SIGTERM");
      }),
  };
}
