// The outside world host discovery touches, behind one interface so unit tests can
// feed recorded tool outputs and fake /dev and /sys trees.

export interface CommandResult {
  stdout: string;
  stderr: string;
  /** null when killed (timeout, signal). */
  exitCode: number | null;
}

export interface CpuInfo {
  model: string;
}

export interface NetInterfaceAddress {
  address: string;
  family: "IPv4" | "IPv6";
  internal: boolean;
  cidr: string | null;
  scopeid?: number;
}

export interface StatFs {
  bsize: bigint;
  blocks: bigint;
  bavail: bigint;
}

export interface DockerFacts {
  version(): Promise<{ Version?: string }>;
  info(): Promise<{ DockerRootDir?: string; Runtimes?: Record<string, unknown> }>;
}

export interface HostDeps {
  /**
   * Runs a program without a shell. Rejects with an error whose `code` is "ENOENT"
   * when the program is not installed.
   */
  run(cmd: string, args: string[], opts?: { timeoutMs?: number }): Promise<CommandResult>;
  readFile(path: string): Promise<string>;
  exists(path: string): Promise<boolean>;
  readdir(path: string): Promise<string[]>;
  /** Resolves symlinks, like realpath(3). */
  realpath(path: string): Promise<string>;
  statfs(path: string): Promise<StatFs>;
  /** null when Docker is not wanted or not reachable at construction. */
  docker: DockerFacts | null;
  hostname(): string;
  kernelRelease(): string;
  /** Node's process.arch. */
  arch(): string;
  cpus(): CpuInfo[];
  totalMemory(): number;
  networkInterfaces(): Record<string, NetInterfaceAddress[] | undefined>;
  /** Sink for non-fatal problems; collection goes on. */
  warn(message: string, err?: unknown): void;
}
