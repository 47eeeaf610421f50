// Test double for HostDeps: a scripted command runner and an in-memory /dev and /sys.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { CommandResult, HostDeps } from "./deps.js";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "fixtures");

export function fixture(name: string): string {
  return readFileSync(join(FIXTURES, name), "utf8");
}

/** What a scripted command does: print and exit, or be missing from PATH. */
export type Script = CommandResult | "missing";

export function ok(stdout: string): CommandResult {
  return { stdout, stderr: "", exitCode: 0 };
}

export function fail(exitCode: number, stdout: string, stderr = ""): CommandResult {
  return { stdout, stderr, exitCode };
}

export interface FakeWorld {
  /** Key: the command and its arguments joined by spaces; a value list is consumed in order. */
  commands?: Record<string, Script | Script[]>;
  /** Paths that exist (device nodes, files); files also listed in `files`. */
  paths?: string[];
  files?: Record<string, string>;
  /** Symlinks resolved by realpath. */
  links?: Record<string, string>;
  /** Directory listings. */
  dirs?: Record<string, string[]>;
}

export interface FakeDeps extends HostDeps {
  calls: string[];
  warnings: string[];
}

export function fakeDeps(world: FakeWorld = {}, overrides: Partial<HostDeps> = {}): FakeDeps {
  const calls: string[] = [];
  const warnings: string[] = [];
  const enoent = (p: string): NodeJS.ErrnoException => Object.assign(new Error(`ENOENT: ${p}`), { code: "ENOENT" });
  const files = world.files ?? {};
  const deps: FakeDeps = {
    calls,
    warnings,
    run: async (cmd, args) => {
      const key = [cmd, ...args].join(" ");
      calls.push(key);
      const entry = world.commands?.[key] ?? world.commands?.[cmd];
      const script = Array.isArray(entry) ? entry.shift() : entry;
      if (script === undefined || script === "missing") throw enoent(cmd);
      return script;
    },
    readFile: async (p) => {
      const f = files[p];
      if (f === undefined) throw enoent(p);
      return f;
    },
    exists: async (p) => (world.paths ?? []).includes(p) || p in files,
    readdir: async (p) => {
      const d = world.dirs?.[p];
      if (!d) throw enoent(p);
      return [...d];
    },
    realpath: async (p) => {
      const target = world.links?.[p];
      if (target !== undefined) return target;
      if ((world.paths ?? []).includes(p) || p in files) return p;
      throw enoent(p);
    },
    statfs: async () => ({ bsize: 4096n, blocks: 1_000_000n, bavail: 250_000n }),
    docker: {
      version: async () => ({ Version: "28.2.2" }),
      info: async () => ({ DockerRootDir: "/var/lib/docker", Runtimes: { runc: {} } }),
    },
    hostname: () => "gpu-node-1",
    kernelRelease: () => "6.8.0-45-generic",
    arch: () => "x64",
    cpus: () => Array.from({ length: 8 }, () => ({ model: "Intel(R) Xeon(R) Platinum 8480+" })),
    totalMemory: () => 64 * 1024 ** 3,
    networkInterfaces: () => ({}),
    warn: (message, err) => {
      warnings.push(err === undefined ? message : `${message}: ${err instanceof Error ? err.message : String(err)}`);
    },
    ...overrides,
  };
  return deps;
}

/** A /sys/class/drm with one cardN and renderD<128+8i> per PCI address, like an MI300X box. */
export function drmWorld(bdfs: string[], step = 8): Pick<FakeWorld, "dirs" | "links"> {
  const entries: string[] = [];
  const links: Record<string, string> = {};
  bdfs.forEach((bdf, i) => {
    const dev = `/sys/devices/pci0000:00/0000:00:01.${i}/${bdf}`;
    const card = `card${i}`;
    const render = `renderD${128 + i * step}`;
    entries.push(card, `${card}-DP-1`, render);
    links[`/sys/class/drm/${card}/device`] = dev;
    links[`/sys/class/drm/${render}/device`] = dev;
  });
  entries.push("version");
  return { dirs: { "/sys/class/drm": entries }, links };
}
