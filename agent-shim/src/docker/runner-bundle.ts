// The portable runner: a read-only folder (Node, its shared libraries, the dynamic loader and the
// bundled runner) mounted into any image and started through the loader, so the image needs
// neither Node nor glibc. Each task also gets a private folder with what the runner needs to
// enroll (bootstrap.json), which doubles as the runner's home.
import { chmodSync, chownSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { RunnerBootstrapFile } from "@dstack/proto/link";

export const RUNNER_MOUNT = "/dstack/runner";
export const TASK_MOUNT = "/dstack/task";

export const RUNNER_ENTRYPOINT = [
  `${RUNNER_MOUNT}/lib/ld-linux-x86-64.so.2`,
  "--library-path",
  `${RUNNER_MOUNT}/lib`,
  `${RUNNER_MOUNT}/bin/node`,
  `${RUNNER_MOUNT}/runner.js`,
  "--home",
  TASK_MOUNT,
];

/** `$DSTACK_RUNNER_BUNDLE`, else `<repo>/build/runner-bundle` (what `npm run build:runner` makes). */
export function defaultRunnerBundleDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DSTACK_RUNNER_BUNDLE) return resolve(env.DSTACK_RUNNER_BUNDLE);
  // This file is agent-shim/src/docker/runner-bundle.ts.
  return resolve(dirname(fileURLToPath(import.meta.url)), "../../../build/runner-bundle");
}

/** Throws a message naming the folder and how to build it when the bundle is incomplete. */
export function checkRunnerBundle(dir: string): void {
  const missing = ["bin/node", "runner.js", "lib/ld-linux-x86-64.so.2"].filter((f) => !existsSync(join(dir, f)));
  if (missing.length > 0) {
    throw new Error(
      `the runner bundle in ${dir} is missing ${missing.join(", ")}; build it with \`npm run build:runner\` ` +
        "(or point DSTACK_RUNNER_BUNDLE / --runner-bundle at a built one)",
    );
  }
}

export type { RunnerBootstrapFile };

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\]|::1)$/i;

/**
 * From a bridge network, the host's loopback is not the container's: a loopback agent URL is
 * rewritten to host.docker.internal (mapped to the host gateway), keeping the original name for TLS.
 */
export function agentUrlForContainer(agentUrl: string, bridge: boolean): { agentUrl: string; serverName?: string } {
  if (!bridge) return { agentUrl };
  let u: URL;
  try {
    u = new URL(agentUrl);
  } catch {
    return { agentUrl };
  }
  if (!LOOPBACK.test(u.hostname)) return { agentUrl };
  const serverName = u.hostname.replace(/^\[|\]$/g, "");
  u.hostname = "host.docker.internal";
  return { agentUrl: u.toString().replace(/\/$/, agentUrl.endsWith("/") ? "/" : ""), serverName };
}

/** "1000" or "1000:1000" → ids; a user name cannot be resolved outside the image: null. */
export function numericUser(containerUser: string): { uid: number; gid: number } | null {
  const m = /^(\d+)(?::(\d+))?$/.exec(containerUser.trim());
  return m ? { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) } : null;
}

/**
 * Creates `<tasksDir>/<taskId>/` (0700) with bootstrap.json (0600); returns the folder. `owner`
 * hands both to a numeric container user, so a runner that is not root can still use its home.
 */
export function writeTaskDir(tasksDir: string, taskId: string, bootstrap: RunnerBootstrapFile | null, owner: { uid: number; gid: number } | null = null): string {
  const dir = join(tasksDir, taskId);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const paths = [dir];
  if (bootstrap) {
    const file = join(dir, "bootstrap.json");
    writeFileSync(file, JSON.stringify(bootstrap, null, 1) + "\n", { mode: 0o600 });
    chmodSync(file, 0o600);
    paths.push(file);
  }
  if (owner && (owner.uid !== process.getuid?.() || owner.gid !== process.getgid?.())) for (const p of paths) chownSync(p, owner.uid, owner.gid);
  return dir;
}
