// dstack's value grammar: ranges, memory sizes, GPU and CPU specs, durations, ports, volume
// mounts, file mappings, repos and env lists. Shared by the YAML schema and by CLI flags
// (`--gpu`, `--cpu`, `--memory`, `--disk`, `--max-duration`, `-p`, `-e`).
import type {
  CpuArch,
  CpuRequirements,
  DiskRequirements,
  EntityRef,
  EnvSpec,
  FileMapping,
  GpuRequirements,
  GpuVendor,
  OffableDuration,
  PortMapping,
  Range,
  RepoRef,
  VolumeMount,
} from "./types.js";

/** A value that does not follow dstack's grammar; the schema turns it into a located issue. */
export class GrammarError extends Error {
  override name = "GrammarError";
}

const fail = (message: string): never => {
  throw new GrammarError(message);
};

const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : String(v));

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Parses one bound of a range with `item`; "" or null means open. */
function parseBound(v: unknown, item: (v: unknown) => number): number | undefined {
  if (v === undefined || v === null || v === "") return undefined;
  return item(v);
}

/**
 * Parses a range: `N` (exactly N), `A..B`, `A..`, `..B`, or a mapping {min, max}. `item` parses
 * each bound (an integer count or a memory size). `..` alone and min > max are errors.
 */
export function parseRange(v: unknown, item: (v: unknown) => number = parseCount): Range {
  let range: Range;
  if (typeof v === "string" && v.includes("..")) {
    const parts = v.replace(/\s+/g, "").split("..");
    if (parts.length !== 2) fail(`Invalid range: ${show(v)}`);
    range = { min: parseBound(parts[0], item), max: parseBound(parts[1], item) };
  } else if (typeof v === "string" || typeof v === "number") {
    const n = item(v);
    range = { min: n, max: n };
  } else if (isRecord(v)) {
    for (const k of Object.keys(v)) {
      if (k !== "min" && k !== "max") fail(`Unknown range field \`${k}\`; expected \`min\` and/or \`max\``);
    }
    range = { min: parseBound(v.min, item), max: parseBound(v.max, item) };
  } else {
    return fail(`Invalid range: ${show(v)}; expected a number, \`min..max\` or {min, max}`);
  }
  if (range.min === undefined && range.max === undefined) fail("Invalid empty range: ..");
  if (range.min !== undefined && range.max !== undefined && range.min > range.max) {
    fail(`Invalid range order: ${range.min}..${range.max}`);
  }
  const out: Range = {};
  if (range.min !== undefined) out.min = range.min;
  if (range.max !== undefined) out.max = range.max;
  return out;
}

/** A non-negative integer, from a number or a decimal string. */
export function parseCount(v: unknown): number {
  const n = typeof v === "string" && /^\s*\d+\s*$/.test(v) ? Number(v) : v;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
    return fail(`Invalid count: ${show(v)}; expected a non-negative integer`);
  }
  return n;
}

const MEMORY_RE = /^(\d+(?:\.\d*)?|\.\d+)(mb|gb|tb)?$/;

/** A memory size in GB: a number (GB) or a string with `MB`, `GB` or `TB` (case-insensitive). */
export function parseMemory(v: unknown): number {
  if (typeof v === "number") {
    if (!Number.isFinite(v) || v < 0) fail(`Invalid memory size: ${v}`);
    return v;
  }
  if (typeof v !== "string") return fail(`Invalid memory size: ${show(v)}`);
  const m = MEMORY_RE.exec(v.replace(/\s+/g, "").toLowerCase());
  if (!m) return fail(`Invalid memory size: ${show(v)}; expected a number with MB, GB or TB, e.g. 16GB`);
  const n = Number(m[1]);
  switch (m[2]) {
    case "tb":
      return n * 1024;
    case "mb":
      return n / 1024;
    default:
      return n;
  }
}

/** A memory range in GB, e.g. `24GB..`, `40GB..80GB`, `16GB`. */
export function parseMemoryRange(v: unknown): Range {
  return parseRange(v, parseMemory);
}

const VENDORS: Record<string, GpuVendor> = {
  nvidia: "nvidia",
  amd: "amd",
  google: "google",
  tpu: "google",
  intel: "intel",
  tenstorrent: "tenstorrent",
  tt: "tenstorrent",
};

/** A GPU vendor name or alias (`tpu` = google, `tt` = tenstorrent); undefined if it is none. */
export function parseGpuVendor(v: string): GpuVendor | undefined {
  return VENDORS[v.toLowerCase()];
}

/** Normalizes GPU names: the deprecated `tpu-` prefix is dropped (and implies vendor google). */
function normalizeGpuNames(names: string[], spec: GpuRequirements): string[] {
  return names.map((name) => {
    if (name.startsWith("tpu-")) {
      spec.vendor ??= "google";
      return name.slice(4);
    }
    return name;
  });
}

/**
 * Parses a GPU spec: a count (`2`), or `:`-separated tokens in any order — a vendor
 * (`nvidia`, `amd`, `tpu`…), names (`A10G,A100`), memory per GPU (`24GB..`), count (`1..2`).
 * Each kind may appear once. Count defaults to `1..` (at least one GPU).
 */
export function parseGpuSpec(v: unknown): GpuRequirements {
  if (typeof v === "number") v = String(v);
  if (typeof v !== "string") return fail(`Invalid GPU spec: ${show(v)}`);
  const text = v.replace(/\s+/g, "");
  const spec: Partial<GpuRequirements> = {};
  const seen = new Set<string>();
  const once = (kind: string) => {
    if (seen.has(kind)) fail(`GPU spec ${kind} conflict: ${show(v)}; each of vendor, name, memory and count may appear once`);
    seen.add(kind);
  };
  for (const token of text.split(":")) {
    if (!token) fail(`GPU spec contains an empty token: ${show(v)}`);
    const vendor = parseGpuVendor(token);
    if (vendor) {
      once("vendor");
      spec.vendor = vendor;
    } else if (/^[a-zA-Z]/.test(token)) {
      once("name");
      const names = token.split(",");
      if (names.some((n) => !n)) fail(`GPU name can not be empty: ${show(v)}`);
      spec.names = names;
    } else if (/[a-zA-Z]/.test(token)) {
      once("memory");
      spec.memory = parseMemoryRange(token);
    } else {
      once("count");
      spec.count = parseRange(token);
    }
  }
  const out: GpuRequirements = { count: spec.count ?? { min: 1 } };
  if (spec.vendor) out.vendor = spec.vendor;
  if (spec.names) out.names = normalizeGpuNames(spec.names, out);
  if (spec.memory) out.memory = spec.memory;
  return out;
}

/** The object form of `gpu`: {vendor, name, count, memory, total_memory, compute_capability}. */
export function parseGpuObject(v: Record<string, unknown>): GpuRequirements {
  const known = ["vendor", "name", "count", "memory", "total_memory", "compute_capability"];
  for (const k of Object.keys(v)) if (!known.includes(k)) fail(`Unknown GPU field \`${k}\``);
  const out: GpuRequirements = { count: v.count === undefined || v.count === null ? { min: 1 } : parseRange(v.count) };
  if (v.vendor !== undefined && v.vendor !== null) {
    const vendor = typeof v.vendor === "string" ? parseGpuVendor(v.vendor) : undefined;
    if (!vendor) fail(`Invalid GPU vendor: ${show(v.vendor)}; expected one of nvidia, amd, google (tpu), intel, tenstorrent (tt)`);
    out.vendor = vendor;
  }
  if (v.name !== undefined && v.name !== null) {
    const names = Array.isArray(v.name) ? v.name : [v.name];
    if (names.length === 0 || names.some((n) => typeof n !== "string" || !n)) fail(`Invalid GPU name: ${show(v.name)}`);
    out.names = normalizeGpuNames(names as string[], out);
  }
  if (v.memory !== undefined && v.memory !== null) out.memory = parseMemoryRange(v.memory);
  if (v.total_memory !== undefined && v.total_memory !== null) out.totalMemory = parseMemoryRange(v.total_memory);
  if (v.compute_capability !== undefined && v.compute_capability !== null) {
    out.computeCapability = parseComputeCapability(v.compute_capability);
  }
  return out;
}

/** `7.5`, `"7.5"` or `[7, 5]` → "7.5". */
export function parseComputeCapability(v: unknown): string {
  let parts: unknown[];
  // YAML reads `9.0` as the number 9.
  if (typeof v === "number") parts = (Number.isInteger(v) ? `${v}.0` : String(v)).split(".");
  else if (typeof v === "string") parts = v.trim().split(".");
  else if (Array.isArray(v)) parts = v;
  else return fail(`Invalid compute capability: ${show(v)}`);
  if (parts.length !== 2) fail(`Invalid compute capability: ${show(v)}; expected major.minor, e.g. 7.5`);
  const nums = parts.map((p) => (typeof p === "number" ? p : /^\d+$/.test(String(p)) ? Number(p) : NaN));
  if (nums.some((n) => !Number.isInteger(n) || n < 0)) fail(`Invalid compute capability: ${show(v)}`);
  return `${nums[0]}.${nums[1]}`;
}

/**
 * Parses a CPU spec: a count (`8`), a range (`2..8`), or `ARCH:COUNT` tokens in any order
 * (`x86:16`, `arm:8..`, `arm`). Count defaults to `2..`.
 */
export function parseCpuSpec(v: unknown): CpuRequirements {
  if (typeof v === "number") v = String(v);
  if (isRecord(v)) {
    const keys = Object.keys(v);
    // {min, max} is a count range (older syntax); otherwise {arch, count}.
    if (keys.length > 0 && keys.every((k) => k === "min" || k === "max")) return { count: parseRange(v) };
    for (const k of keys) if (k !== "arch" && k !== "count") fail(`Unknown CPU field \`${k}\``);
    const out: CpuRequirements = { count: v.count === undefined || v.count === null ? { min: 2 } : parseRange(v.count) };
    if (v.arch !== undefined && v.arch !== null) out.arch = parseCpuArch(v.arch);
    return out;
  }
  if (typeof v !== "string") return fail(`Invalid CPU spec: ${show(v)}`);
  const out: Partial<CpuRequirements> = {};
  for (const token of v.replace(/\s+/g, "").split(":")) {
    if (!token) fail(`CPU spec contains an empty token: ${show(v)}`);
    if (token.includes("..") || /^\d+$/.test(token)) {
      if (out.count) fail(`CPU spec count conflict: ${show(v)}`);
      out.count = parseRange(token);
    } else {
      if (out.arch) fail(`CPU spec arch conflict: ${show(v)}`);
      out.arch = parseCpuArch(token, v);
    }
  }
  const res: CpuRequirements = { count: out.count ?? { min: 2 } };
  if (out.arch) res.arch = out.arch;
  return res;
}

function parseCpuArch(v: unknown, whole: unknown = v): CpuArch {
  const s = typeof v === "string" ? v.toLowerCase() : "";
  if (s === "x86" || s === "x86_64" || s === "amd64") return "x86";
  if (s === "arm" || s === "arm64" || s === "aarch64") return "arm";
  return fail(`Invalid CPU architecture in ${show(whole)}; expected x86 or arm`);
}

/** `disk: 100GB..` or `disk: {size: 100GB..}`. */
export function parseDiskSpec(v: unknown): DiskRequirements {
  if (isRecord(v)) {
    for (const k of Object.keys(v)) if (k !== "size") fail(`Unknown disk field \`${k}\`; expected \`size\``);
    if (v.size === undefined || v.size === null) fail("Disk `size` is required");
    return { size: parseMemoryRange(v.size) };
  }
  return { size: parseMemoryRange(v) };
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** A duration in seconds: an integer (seconds) or `<n>[s|m|h|d|w]`, e.g. `90s`, `5m`, `1d`. */
export function parseDuration(v: unknown): number {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) fail(`Cannot parse the duration ${v}`);
    return Math.trunc(v);
  }
  if (typeof v !== "string") return fail(`Cannot parse the duration ${show(v)}`);
  if (/^\s*-?\d+\s*$/.test(v)) return Number(v);
  const m = /^(\d+) *([smhdw])$/.exec(v.trim());
  if (!m) return fail(`Cannot parse the duration ${show(v)}; expected seconds or e.g. 30s, 5m, 2h, 1d, 1w`);
  return Number(m[1]) * DURATION_UNITS[m[2]!]!;
}

/** A duration that may be switched off: `off`/`false` → "off"; negative values are errors. */
export function parseOffDuration(v: unknown): OffableDuration | undefined {
  if (v === "off" || v === false) return "off";
  if (v === true || v === undefined || v === null) return undefined;
  const d = parseDuration(v);
  if (d < 0) fail("Duration cannot be negative");
  return d;
}

/** An idle duration: `off`, `false` and any negative number mean "never" (-1 in older data). */
export function parseIdleDuration(v: unknown): OffableDuration | undefined {
  if (v === "off" || v === false) return "off";
  if (v === true || v === undefined || v === null) return undefined;
  const d = parseDuration(v);
  return d < 0 ? "off" : d;
}

function parsePortNumber(s: string | number, whole: unknown): number {
  const n = typeof s === "number" ? s : Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 65535) fail(`Invalid port ${show(whole)}; ports are 1..65535`);
  return n;
}

/** A port: `8080` (same local port), `LOCAL:CONTAINER`, `*:CONTAINER` (any local port), or {local_port, container_port}. */
export function parsePort(v: unknown): PortMapping {
  if (typeof v === "number") {
    const p = parsePortNumber(v, v);
    return { localPort: p, containerPort: p };
  }
  if (typeof v === "string") {
    const m = /^(?:(\d+|\*):)?(\d+)$/.exec(v.trim());
    if (!m) return fail(`Invalid port mapping ${show(v)}; expected PORT, LOCAL:CONTAINER or *:CONTAINER`);
    const container = parsePortNumber(m[2]!, v);
    if (m[1] === undefined) return { localPort: container, containerPort: container };
    if (m[1] === "*") return { containerPort: container };
    return { localPort: parsePortNumber(m[1], v), containerPort: container };
  }
  if (isRecord(v)) {
    for (const k of Object.keys(v)) {
      if (k !== "local_port" && k !== "container_port") fail(`Unknown port field \`${k}\`; expected \`local_port\` and \`container_port\``);
    }
    if (v.container_port === undefined || v.container_port === null) fail("`container_port` is required");
    const out: PortMapping = { containerPort: parsePortNumber(v.container_port as number, v.container_port) };
    if (v.local_port !== undefined && v.local_port !== null) out.localPort = parsePortNumber(v.local_port as number, v.local_port);
    return out;
  }
  return fail(`Invalid port: ${show(v)}`);
}

/** A service `port`: an integer (the container port; 80 outside) or `A:B`. */
export function parseServicePort(v: unknown): PortMapping {
  if (typeof v === "number") return { localPort: 80, containerPort: parsePortNumber(v, v) };
  return parsePort(v);
}

/** Absolute POSIX path without `..`, normalized like PurePosixPath. */
function mountPath(p: unknown, what: string): string {
  if (typeof p !== "string" || p === "") return fail(`${what}: empty path`);
  if (!p.startsWith("/")) fail(`${what} must be absolute: ${p}`);
  const parts = p.split("/").filter((s) => s !== "" && s !== ".");
  if (parts.includes("..")) fail(`${what}: .. is not allowed: ${p}`);
  // POSIX keeps a leading `//` distinct; PurePosixPath does too.
  return (p.startsWith("//") && !p.startsWith("///") ? "//" : "/") + parts.join("/");
}

/**
 * A volume mount: `name:/path` (network volume), `/host/path:/path` (instance volume: the source
 * contains `/`), {name (string or alternatives), path}, or {instance_path, path, optional}.
 */
export function parseVolumeMount(v: unknown): VolumeMount {
  if (typeof v === "string") {
    const parts = v.split(":");
    if (parts.length !== 2) return fail(`Invalid mount point ${show(v)}; expected SOURCE:PATH`);
    const [src, dest] = parts as [string, string];
    if (src.includes("/")) {
      return { kind: "instance", instancePath: mountPath(src, "Instance path"), path: mountPath(dest, "Path"), optional: false };
    }
    if (!src) fail(`Invalid mount point ${show(v)}: empty volume name`);
    return { kind: "network", names: [src], path: mountPath(dest, "Path") };
  }
  if (isRecord(v)) {
    if ("instance_path" in v) {
      for (const k of Object.keys(v)) {
        if (!["instance_path", "path", "optional"].includes(k)) fail(`Unknown instance volume field \`${k}\``);
      }
      if (v.optional !== undefined && typeof v.optional !== "boolean") fail("`optional` must be a boolean");
      return {
        kind: "instance",
        instancePath: mountPath(v.instance_path, "Instance path"),
        path: mountPath(v.path, "Path"),
        optional: v.optional === true,
      };
    }
    for (const k of Object.keys(v)) if (k !== "name" && k !== "path") fail(`Unknown volume field \`${k}\``);
    const names = Array.isArray(v.name) ? v.name : [v.name];
    if (names.length === 0 || names.some((n) => typeof n !== "string" || !n)) {
      fail("Volume `name` must be a name or a list of names");
    }
    return { kind: "network", names: names as string[], path: mountPath(v.path, "Path") };
  }
  return fail(`Invalid volume: ${show(v)}`);
}

const isWindowsDrive = (parts: string[]): boolean =>
  parts.length > 1 && /^[a-zA-Z]$/.test(parts[0]!) && /^[\\/]/.test(parts[1]!);

/** `local[:container]`; a Windows drive (`C:\x`) is part of the local path. */
export function parseFileMapping(v: unknown): FileMapping {
  let out: FileMapping;
  if (typeof v === "string") {
    let parts = v.split(":");
    if (isWindowsDrive(parts)) parts = [`${parts[0]}:${parts[1]}`, ...parts.slice(2)];
    if (parts.length === 1) out = { localPath: parts[0]!, path: parts[0]! };
    else if (parts.length === 2) out = { localPath: parts[0]!, path: parts[1]! };
    else return fail(`Invalid file path mapping: ${show(v)}`);
  } else if (isRecord(v)) {
    for (const k of Object.keys(v)) if (k !== "local_path" && k !== "path") fail(`Unknown files field \`${k}\``);
    if (typeof v.local_path !== "string") fail("`local_path` is required");
    if (typeof v.path !== "string") fail("`path` is required");
    out = { localPath: v.local_path as string, path: v.path as string };
  } else {
    return fail(`Invalid file path mapping: ${show(v)}`);
  }
  if (!out.localPath) fail("`local_path` cannot be empty");
  if (/^[a-zA-Z]:[\\/]/.test(out.path) || /^[\\/]{2}/.test(out.path) && out.path.includes("\\")) {
    fail(`path must be a Unix file path: ${out.path}`);
  }
  return out;
}

/** `.`, a local path or a Git URL, optionally followed by `:path` in the container. */
export function parseRepoSpec(v: string): RepoRef {
  let parts = v.split(":");
  let isUrl = false;
  if (parts.length > 1) {
    if (parts[0]!.includes("@") || parts[1]!.startsWith("//")) {
      parts = [`${parts[0]}:${parts[1]}`, ...parts.slice(2)];
      isUrl = true;
    } else if (isWindowsDrive(parts)) {
      parts = [`${parts[0]}:${parts[1]}`, ...parts.slice(2)];
    }
  }
  if (parts.length > 2 || !parts[0]) fail(`Invalid repo: ${show(v)}`);
  const out: RepoRef = { path: parts[1] ?? ".", ifExists: "error" };
  if (isUrl) out.url = parts[0]!;
  else out.localPath = parts[0]!;
  return out;
}

/** `name` or `project/name`. */
export function parseEntityRef(v: string): EntityRef {
  const parts = v.split("/");
  if (parts.some((p) => p.length === 0) || parts.length > 2) {
    fail("Invalid entity reference. Only `<name>` or `<project>/<name>` formats are allowed");
  }
  return parts.length === 1 ? { name: parts[0]! } : { project: parts[0]!, name: parts[1]! };
}

const ENV_KEY_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Env as a list (`KEY=VAL`, `KEY=`, `KEY`) or a mapping; bare keys come from the CLI environment. */
export function parseEnv(v: unknown): EnvSpec {
  const out: EnvSpec = { values: {}, fromCli: [] };
  const seen = new Set<string>();
  const add = (key: string, value: string | undefined) => {
    if (!ENV_KEY_RE.test(key)) fail(`Invalid environment variable name: ${show(key)}`);
    if (seen.has(key)) fail(`Duplicate environment variable: ${key}`);
    seen.add(key);
    if (value === undefined) out.fromCli.push(key);
    else out.values[key] = value;
  };
  if (v === undefined || v === null) return out;
  if (Array.isArray(v)) {
    for (const item of v) {
      if (typeof item !== "string") fail(`Invalid environment variable: ${show(item)}; expected KEY=VALUE or KEY`);
      const s = item as string;
      const eq = s.indexOf("=");
      if (eq < 0) add(s, undefined);
      else add(s.slice(0, eq), s.slice(eq + 1));
    }
    return out;
  }
  if (isRecord(v)) {
    for (const [k, val] of Object.entries(v)) {
      // A YAML number or boolean is written as text, as the shell would see it.
      if (typeof val === "string") add(k, val);
      else if (typeof val === "number" || typeof val === "boolean") add(k, String(val));
      else if (val === null) add(k, undefined);
      else fail(`Invalid value for environment variable ${k}: expected a string`);
    }
    return out;
  }
  return fail("`env` must be a list of KEY=VALUE strings or a mapping");
}

/** Parses a single `-e KEY[=VALUE]` CLI item into the env spec. */
export function parseEnvItem(item: string): { key: string; value?: string } {
  const eq = item.indexOf("=");
  const key = eq < 0 ? item : item.slice(0, eq);
  if (!ENV_KEY_RE.test(key)) fail(`Invalid environment variable name: ${show(key)}`);
  return eq < 0 ? { key } : { key, value: item.slice(eq + 1) };
}

/** `user`, `uid`, `user:group`, `uid:gid` as Docker accepts it. */
export function parseUnixUser(v: string): { uid?: number; gid?: number; username?: string; groupname?: string } {
  const parts = v.split(":");
  if (parts.length > 2) fail("invalid user format: too many parts");
  const out: { uid?: number; gid?: number; username?: string; groupname?: string } = {};
  if (!parts[0]) fail("invalid user format: empty user name or id");
  if (/^-?\d+$/.test(parts[0]!)) {
    out.uid = Number(parts[0]);
    if (out.uid < 0) fail(`invalid user format: negative uid ${out.uid}`);
  } else out.username = parts[0]!;
  if (parts.length === 2) {
    if (!parts[1]) fail("invalid user format: empty group name or id");
    if (/^-?\d+$/.test(parts[1]!)) {
      out.gid = Number(parts[1]);
      if (out.gid < 0) fail(`invalid user format: negative gid ${out.gid}`);
    } else out.groupname = parts[1]!;
  }
  return out;
}

const CRON_FIELDS: [string, number, number, string[]][] = [
  ["minute", 0, 59, []],
  ["hour", 0, 23, []],
  ["day of month", 1, 31, []],
  ["month", 1, 12, ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]],
  ["day of week", 0, 7, ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]],
];

/** A 5-field crontab expression (UTC): numbers, `*`, ranges, steps, lists, month/day names. */
export function validateCron(expr: string): void {
  const fields = expr.trim().split(/\s+/);
  if (fields.length !== 5) fail(`Invalid cron expression ${show(expr)}: expected 5 fields, got ${fields.length}`);
  fields.forEach((field, i) => {
    const [label, lo, hi, names] = CRON_FIELDS[i]!;
    const value = (s: string): number => {
      const idx = names.indexOf(s.toLowerCase());
      if (idx >= 0) return idx + (i === 3 ? 1 : 0);
      if (!/^\d+$/.test(s)) return fail(`Invalid cron ${label} ${show(field)} in ${show(expr)}`);
      const n = Number(s);
      if (n < lo || n > hi) fail(`Cron ${label} ${n} out of range ${lo}-${hi} in ${show(expr)}`);
      return n;
    };
    for (const part of field.split(",")) {
      const [base, step, extra] = part.split("/");
      if (extra !== undefined || base === undefined || base === "") fail(`Invalid cron ${label} ${show(field)} in ${show(expr)}`);
      if (step !== undefined && !/^[1-9]\d*$/.test(step)) fail(`Invalid cron step ${show(part)} in ${show(expr)}`);
      if (base === "*") continue;
      const ends = base!.split("-");
      if (ends.length > 2) fail(`Invalid cron ${label} ${show(field)} in ${show(expr)}`);
      const nums = ends.map(value);
      if (nums.length === 2 && nums[0]! > nums[1]!) fail(`Invalid cron range ${show(base)} in ${show(expr)}`);
    }
  });
}

/** `${{ secrets.NAME }}` references in a string. */
export function findSecretReferences(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/\$\{\{\s*secrets\.([a-zA-Z0-9_-]+)\s*\}\}/g)) out.push(m[1]!);
  return out;
}
