// A real git server over SSH for tests: Debian's OpenSSH sshd on a loopback port (test/helpers/sshd.ts:
// temp config, its own host key, one authorized test key, login as the test's user: root) whose exec
// requests run Debian's git-upload-pack on bare repositories made by git-http.ts's makeTestRepo.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { sshKeygen, startSshd } from "../helpers/sshd.js";

export interface GitSshd {
  port: number;
  /** The user the key logs in as. */
  user: string;
  /** Private key (OpenSSH format) the server accepts, and one it does not. */
  key: string;
  wrongKey: string;
  close(): Promise<void>;
}

/** Starts sshd on 127.0.0.1; needs root (sshd switches to the logged-in user). */
export async function startGitSshd(): Promise<GitSshd> {
  const work = mkdtempSync(join(tmpdir(), "git-sshd-"));
  sshKeygen(join(work, "host_key"));
  const key = sshKeygen(join(work, "id_good"));
  const wrongKey = sshKeygen(join(work, "id_bad"));
  writeFileSync(join(work, "authorized_keys"), readFileSync(join(work, "id_good.pub")));
  const sshd = await startSshd({ dir: work, hostKey: join(work, "host_key"), authorizedKeys: join(work, "authorized_keys") });
  return { port: sshd.port, user: userInfo().username, key, wrongKey, close: sshd.stop };
}
