// Default HostDeps: the real machine this process runs on.
import { execFile } from "node:child_process";
import { access, readdir, readFile, realpath, statfs } from "node:fs/promises";
import os from "node:os";
import Docker from "dockerode";
import type { CommandResult, DockerFacts, HostDeps } from "./deps.js";

const MAX_OUTPUT = 16 * 1024 * 1024;

export function runCommand(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: opts.timeoutMs ?? 30_000, maxBuffer: MAX_OUTPUT, encoding: "utf8", env: { ...process.env, LC_ALL: "C" } }, (err, stdout, stderr) => {
      if (!err) return resolve({ stdout, stderr, exitCode: 0 });
      const code = (err as NodeJS.ErrnoException).code;
      // A string code means the program never ran (ENOENT, EACCES); a number is its exit status.
      if (typeof code === "string") return reject(err);
      // Killed by the timeout: no exit status to speak of.
      resolve({ stdout, stderr, exitCode: err.killed || typeof code !== "number" ? null : code });
    });
  });
}

/** Docker facts with a deadline, so a wedged daemon cannot stall host discovery. */
export function dockerFacts(docker: Docker, timeoutMs = 10_000): DockerFacts {
  const within = <T>(p: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`Docker did not answer within ${timeoutMs} ms`)), timeoutMs);
      p.then(
        (v) => (clearTimeout(t), resolve(v)),
        (e: unknown) => (clearTimeout(t), reject(e)),
      );
    });
  return {
    version: () => within(docker.version() as Promise<{ Version?: string }>),
    info: () => within(docker.info() as Promise<{ DockerRootDir?: string; Runtimes?: Record<string, unknown> }>),
  };
}

export function systemDeps(overrides: Partial<HostDeps> = {}): HostDeps {
  return {
    run: runCommand,
    readFile: (p) => readFile(p, "utf8"),
    exists: (p) => access(p).then(() => true, () => false),
    readdir: (p) => readdir(p),
    realpath: (p) => realpath(p),
    statfs: async (p) => {
      const s = await statfs(p, { bigint: true });
      return { bsize: s.bsize, blocks: s.blocks, bavail: s.bavail };
    },
    docker: dockerFacts(new Docker()),
    hostname: () => os.hostname(),
    kernelRelease: () => os.release(),
    arch: () => process.arch,
    cpus: () => os.cpus().map((c) => ({ model: c.model })),
    totalMemory: () => os.totalmem(),
    networkInterfaces: () => os.networkInterfaces(),
    warn: (message, err) => {
      const detail = err === undefined ? {} : { error: err instanceof Error ? err.message : String(err) };
      process.stderr.write(`${JSON.stringify({ level: "warn", component: "host", msg: message, ...detail })}\n`);
    },
    ...overrides,
  };
}
