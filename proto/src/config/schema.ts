// The zod schema of dstack's configuration syntax. Each schema reads the YAML value as written
// (snake_case keys, shorthands) so that issue paths point at what the user typed, then
// normalizes it into the typed shape of ./types.ts with dstack's defaults applied.
import * as z from "zod";
import { closestMatch } from "./errors.js";
import {
  GrammarError,
  parseComputeCapability,
  parseCpuSpec,
  parseDiskSpec,
  parseDuration,
  parseEntityRef,
  parseEnv,
  parseFileMapping,
  parseGpuObject,
  parseGpuSpec,
  parseIdleDuration,
  parseMemory,
  parseMemoryRange,
  parseOffDuration,
  parsePort,
  parseRange,
  parseRepoSpec,
  parseServicePort,
  parseUnixUser,
  parseVolumeMount,
  validateCron,
} from "./grammar.js";
import {
  BACKEND_TYPES,
  type AnyConfig,
  type BackendOptions,
  type DevEnvironmentConfig,
  type EntityRef,
  type FleetConfig,
  type GatewayConfig,
  type CpuRequirements,
  type DiskRequirements,
  type GpuRequirements,
  type InstanceSelector,
  type NodeGroup,
  type Probe,
  type ProfileParams,
  type ProxyJump,
  type PythonVersion,
  type Range,
  type RateLimit,
  type RepoRef,
  type ReplicaGroup,
  type ResourceRequirements,
  type RetryPolicy,
  type RunConfigBase,
  type ScalingPolicy,
  type ServiceConfig,
  type ServiceModel,
  type SshHost,
  type TaskConfig,
  type VolumeConfig,
} from "./types.js";

// ---------------------------------------------------------------------------------------------
// Helpers

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Marks unknown-field issues so the locator points at the key rather than the value. */
export const UNKNOWN_FIELD = "Unknown field";

/** Fields that belong to another configuration type, for a better hint than a typo guess. */
let otherTypeFields: Map<string, string> | undefined;

/**
 * An object with a fixed set of fields. Unknown fields are errors, as in dstack, reported even
 * when other fields are invalid, with a "did you mean" hint for plausible typos.
 */
function strict<S extends z.ZodRawShape>(shape: S, topLevelOf?: string) {
  const known = Object.keys(shape);
  return z.looseObject(shape).check(
    z.superRefine(
      (v: unknown, ctx) => {
        if (!isRecord(v)) return;
        for (const key of Object.keys(v)) {
          if (known.includes(key)) continue;
          let message = `${UNKNOWN_FIELD} \`${key}\``;
          const guess = closestMatch(key, known);
          const owner = topLevelOf ? otherTypeFields?.get(key) : undefined;
          if (guess) message += `; did you mean \`${guess}\`?`;
          else if (owner) message += ` (it is a field of ${owner} configurations, not ${topLevelOf})`;
          ctx.addIssue({ code: "custom", message, path: [key], input: v[key] });
        }
      },
      { when: () => true },
    ),
  );
}

/** Applies a grammar parser inside a transform; its GrammarError becomes an issue. */
function applyGrammar<T>(v: unknown, ctx: z.RefinementCtx, fn: (v: unknown) => T): T {
  try {
    return fn(v);
  } catch (e) {
    if (!(e instanceof GrammarError)) throw e;
    ctx.addIssue({ code: "custom", message: e.message, input: v });
    return z.NEVER;
  }
}

/** Runs a grammar parser; its GrammarError becomes an issue at the current path. */
function grammar<T>(fn: (v: unknown) => T) {
  return z.unknown().transform((v, ctx): T => {
    if (v === undefined) {
      ctx.addIssue({ code: "custom", message: "Field required", input: v });
      return z.NEVER;
    }
    try {
      return fn(v);
    } catch (e) {
      if (!(e instanceof GrammarError)) throw e;
      ctx.addIssue({ code: "custom", message: e.message, input: v });
      return z.NEVER;
    }
  });
}

/** Chooses the schema by the input's shape (a cleaner error than a union of every branch). */
function choose<T>(pick: (v: unknown) => z.ZodType | string) {
  return z.unknown().transform((v, ctx): T => {
    const schema = pick(v);
    if (typeof schema === "string") {
      ctx.addIssue({ code: "custom", message: schema, input: v });
      return z.NEVER;
    }
    const r = schema.safeParse(v);
    if (r.success) return r.data as T;
    for (const issue of r.error.issues) ctx.addIssue({ ...issue, input: v } as never);
    return z.NEVER;
  });
}

/** Optional field: absent or null. */
const opt = <T extends z.ZodType>(s: T) => s.nullish();

const str = z.string();
const nonEmpty = z.string().min(1);
const strList = z.array(z.string());
const commands = z.array(z.string({ error: "Each command must be a string (quote commands that contain `: `)" }));

const enumOf = <const T extends readonly [string, ...string[]]>(values: T, what: string) =>
  z.unknown().transform((v, ctx): T[number] => {
    if (typeof v === "string" && (values as readonly string[]).includes(v)) return v as T[number];
    const guess = typeof v === "string" ? closestMatch(v, values) : undefined;
    ctx.addIssue({
      code: "custom",
      input: v,
      message: `Invalid ${what} ${JSON.stringify(v)}; expected one of: ${values.join(", ")}${guess ? `. Did you mean \`${guess}\`?` : ""}`,
    });
    return z.NEVER;
  });

const und = <T>(v: T | null | undefined): T | undefined => (v === null ? undefined : v);

/** Copies defined values only, so normalized objects carry no `undefined` keys. */
function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

// ---------------------------------------------------------------------------------------------
// Values

const count = grammar((v) => parseRange(v));
const duration = grammar(parseDuration);
const offDuration = grammar(parseOffDuration);
const idleDuration = grammar(parseIdleDuration);
const memory = grammar(parseMemory);
const memoryRange = grammar(parseMemoryRange);
const port = grammar(parsePort);
const ports = z.array(port);
const env = grammar(parseEnv);
const backendType = enumOf(BACKEND_TYPES, "backend");
const spotPolicy = enumOf(["spot", "on-demand", "auto"] as const, "spot_policy");
const pythonVersion = grammar((v): PythonVersion => {
  const versions = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14"];
  // YAML reads `python: 3.10` as the number 3.1.
  let s = typeof v === "number" ? String(v) : v;
  if (s === "3.1") s = "3.10";
  if (typeof s === "string" && versions.includes(s)) return s as PythonVersion;
  throw new GrammarError(`Invalid python version ${JSON.stringify(v)}; expected one of: ${versions.join(", ")} (quote it, e.g. "3.10")`);
});

const tags = opt(z.record(z.string(), z.unknown())).transform((v, ctx) => {
  if (!v) return undefined;
  const out: Record<string, string> = {};
  for (const [k, raw] of Object.entries(v)) {
    const val = typeof raw === "number" || typeof raw === "boolean" ? String(raw) : raw;
    if (!/^[_\-a-zA-Z0-9]{1,60}$/.test(k)) {
      ctx.addIssue({ code: "custom", path: [k], input: k, message: `Invalid tag key ${k}. The key must match regex '^[_\\-a-zA-Z0-9]{1,60}$'` });
    } else if (typeof val !== "string" || !/^[a-zA-Z0-9 .:/=_\-+@]{0,256}$/.test(val)) {
      ctx.addIssue({ code: "custom", path: [k], input: raw, message: `Invalid tag value ${String(raw)}. The value must match regex '^[a-zA-Z0-9 .:/=_\\-+@]{0,256}$'` });
    } else out[k] = val;
  }
  // An empty mapping means the same as none.
  return Object.keys(out).length ? out : undefined;
});

// The object forms are zod objects so unknown fields get the same hints as everywhere else.
const gpu = choose<GpuRequirements>((v) => {
  if (!isRecord(v)) return grammar(parseGpuSpec);
  return strict({
    vendor: z.unknown().optional(),
    name: z.unknown().optional(),
    count: z.unknown().optional(),
    memory: z.unknown().optional(),
    total_memory: z.unknown().optional(),
    compute_capability: z.unknown().optional(),
  }).transform((x, ctx) => applyGrammar(x, ctx, (o) => parseGpuObject(o as Record<string, unknown>)));
});
const cpu = choose<CpuRequirements>((v) =>
  isRecord(v) && !Object.keys(v).every((k) => k === "min" || k === "max")
    ? strict({ arch: z.unknown().optional(), count: z.unknown().optional() }).transform((x, ctx) => applyGrammar(x, ctx, parseCpuSpec))
    : grammar(parseCpuSpec),
);
const disk = choose<DiskRequirements>((v) =>
  isRecord(v) ? strict({ size: memoryRange }).transform((d) => ({ size: d.size })) : grammar(parseDiskSpec),
);

export const DEFAULT_RESOURCES: ResourceRequirements = {
  cpu: { count: { min: 2 } },
  memory: { min: 8 },
  gpu: { count: { min: 0 } },
  disk: { size: { min: 100 } },
};

export function defaultResources(): ResourceRequirements {
  return structuredClone(DEFAULT_RESOURCES);
}

export const resourcesSchema = strict({
  cpu: opt(cpu),
  memory: opt(memoryRange),
  shm_size: opt(memory),
  gpu: opt(gpu),
  disk: opt(disk),
}).transform((r): ResourceRequirements => {
  const d = defaultResources();
  return compact({
    cpu: r.cpu ?? d.cpu,
    memory: r.memory ?? d.memory,
    shmSize: und(r.shm_size),
    gpu: r.gpu ?? d.gpu,
    disk: r.disk ?? d.disk,
  });
});
const resources = opt(resourcesSchema).transform((r) => r ?? defaultResources());

type RetryRaw = boolean | { on_events?: RetryPolicy["onEvents"] | null; duration?: number | null };
const retry = opt(
  choose<RetryRaw>((v) => {
    if (typeof v === "boolean") return z.boolean();
    if (isRecord(v)) {
      return strict({
        on_events: opt(z.array(enumOf(["no-capacity", "interruption", "error"] as const, "retry event")).min(1, "`on_events` cannot be empty")),
        duration: opt(duration),
      });
    }
    return "`retry` must be a boolean or a mapping with `on_events` and `duration`";
  }),
).transform((v): RetryPolicy | undefined => {
  if (v === undefined || v === null || v === false) return undefined;
  const all: RetryPolicy["onEvents"] = ["no-capacity", "interruption", "error"];
  if (v === true) return { onEvents: all, duration: 3600 };
  return { onEvents: v.on_events ?? all, duration: v.duration ?? 3600 };
});

const utilizationPolicy = strict({
  min_gpu_utilization: z.number().int().min(0).max(100),
  time_window: duration.refine((d) => d >= 300, "Minimum time_window is 5m"),
}).transform((u) => ({ minGpuUtilization: u.min_gpu_utilization, timeWindow: u.time_window }));

const schedule = strict({
  cron: choose<string | string[]>((v) => (Array.isArray(v) ? z.array(str).min(1, "At least one cron expression must be specified") : str)),
})
  .transform((s) => ({ cron: Array.isArray(s.cron) ? s.cron : [s.cron] }))
  .superRefine((s, ctx) => {
    s.cron.forEach((c, i) => {
      try {
        validateCron(c);
      } catch (e) {
        if (!(e instanceof GrammarError)) throw e;
        ctx.addIssue({ code: "custom", path: ["cron", ...(s.cron.length > 1 ? [i] : [])], message: e.message, input: c });
      }
    });
  });

const entityRef = choose<EntityRef>((v) => {
  if (typeof v === "string") return grammar((x) => parseEntityRef(x as string));
  if (!isRecord(v)) return "Expected a name, `<project>/<name>`, or a mapping with `name` and `project`";
  return strict({ project: opt(str), name: nonEmpty }).transform((r) => compact({ project: und(r.project), name: r.name }));
});

const instanceSelector = choose<InstanceSelector>((v) => {
  if (typeof v === "string") return z.string().min(1).transform((name) => ({ kind: "name" as const, name }));
  if (!isRecord(v)) return "An instance selector is a name, {name}, {hostname} or {fleet, instance}";
  if ("fleet" in v || "instance" in v) {
    return strict({ fleet: entityRef, instance: z.number().int().min(0) }).transform((s) => ({ kind: "fleet" as const, fleet: s.fleet, instance: s.instance }));
  }
  if ("hostname" in v) return strict({ hostname: nonEmpty }).transform((s) => ({ kind: "hostname" as const, hostname: s.hostname }));
  return strict({ name: nonEmpty }).transform((s) => ({ kind: "name" as const, name: s.name }));
});

const backendOptions = opt(
  z.array(
    strict({
      type: enumOf(["vastai"] as const, "backend_options type"),
      offer_order: opt(enumOf(["score", "price"] as const, "offer_order")),
      min_reliability: opt(z.number().min(0).max(1)),
      min_score: opt(z.number().int().min(0)),
    }).transform((o): BackendOptions => compact({ type: o.type, offerOrder: und(o.offer_order), minReliability: und(o.min_reliability), minScore: und(o.min_score) })),
  ),
).superRefine((v, ctx) => {
  const seen = new Set<string>();
  v?.forEach((o, i) => {
    if (seen.has(o.type)) ctx.addIssue({ code: "custom", path: [i], message: `backend_options contains duplicate entry for backend '${o.type}'`, input: o });
    seen.add(o.type);
  });
});

const registryAuth = strict({ username: str, password: str });

const volumes = z.array(grammar(parseVolumeMount));
const files = z.array(grammar(parseFileMapping));
const repoSpec = choose<RepoRef>((v) => {
  if (typeof v === "string") return grammar((x) => parseRepoSpec(x as string));
  return strict({
    local_path: opt(str),
    url: opt(str),
    branch: opt(str),
    hash: opt(str),
    path: opt(str),
    if_exists: opt(enumOf(["error", "skip"] as const, "if_exists")),
  })
    .superRefine((r, ctx) => {
      if (r.local_path && r.url) ctx.addIssue({ code: "custom", path: ["url"], message: "`local_path` and `url` are mutually exclusive" });
      if (!r.local_path && !r.url) ctx.addIssue({ code: "custom", path: [], message: "Either `local_path` or `url` must be specified" });
    })
    .transform((r) => compact({ localPath: und(r.local_path), url: und(r.url), branch: und(r.branch), hash: und(r.hash), path: r.path ?? ".", ifExists: r.if_exists ?? "error" }));
}).superRefine((r, ctx) => {
  if (r.path.startsWith("~") && !/^~(\/|$)/.test(r.path)) ctx.addIssue({ code: "custom", message: "`~username` syntax is not supported" });
});

// ---------------------------------------------------------------------------------------------
// Profile parameters and fields common to runs

const profileShape = {
  backends: opt(z.array(backendType)),
  regions: opt(strList),
  availability_zones: opt(strList),
  instance_types: opt(strList),
  reservation: opt(str),
  spot_policy: opt(spotPolicy),
  retry,
  max_duration: opt(offDuration),
  stop_duration: opt(offDuration),
  max_price: opt(z.number().gt(0)),
  creation_policy: opt(enumOf(["reuse", "reuse-or-create"] as const, "creation_policy")),
  idle_duration: opt(idleDuration),
  utilization_policy: opt(utilizationPolicy),
  startup_order: opt(enumOf(["any", "master-first", "workers-first"] as const, "startup_order")),
  stop_criteria: opt(enumOf(["all-done", "master-done"] as const, "stop_criteria")),
  schedule: opt(schedule),
  fleets: opt(z.array(entityRef)),
  instances: opt(z.array(instanceSelector).min(1)),
  tags,
  backend_options: backendOptions,
};

type ProfileRaw = { [K in keyof typeof profileShape]?: z.output<(typeof profileShape)[K]> };

function normalizeProfile(p: ProfileRaw): ProfileParams {
  return compact({
    backends: und(p.backends),
    regions: und(p.regions),
    availabilityZones: und(p.availability_zones),
    instanceTypes: und(p.instance_types),
    reservation: und(p.reservation),
    spotPolicy: p.spot_policy ?? "on-demand",
    retry: p.retry,
    maxDuration: p.max_duration ?? "off",
    stopDuration: p.stop_duration ?? 300,
    maxPrice: und(p.max_price),
    creationPolicy: p.creation_policy ?? "reuse-or-create",
    idleDuration: p.idle_duration ?? 300,
    utilizationPolicy: und(p.utilization_policy),
    startupOrder: p.startup_order ?? "any",
    stopCriteria: p.stop_criteria ?? "all-done",
    schedule: und(p.schedule),
    fleets: und(p.fleets),
    instances: und(p.instances),
    tags: p.tags,
    backendOptions: p.backend_options?.length ? p.backend_options : undefined,
  });
}

const runShape = {
  ...profileShape,
  type: str,
  name: opt(str),
  image: opt(str),
  user: opt(grammar((v) => {
    if (typeof v === "number") v = String(v);
    if (typeof v !== "string") throw new GrammarError("`user` must be a string: user_name_or_id[:group_name_or_id]");
    parseUnixUser(v);
    return v;
  })),
  privileged: opt(z.boolean()),
  entrypoint: opt(str),
  working_dir: opt(str),
  home_dir: opt(str),
  registry_auth: opt(registryAuth),
  python: opt(pythonVersion),
  nvcc: opt(z.boolean()),
  single_branch: opt(z.boolean()),
  env: opt(env),
  shell: opt(str.refine((s) => s === "sh" || s === "bash" || s.startsWith("/"), "The value must be `sh`, `bash`, or an absolute path")),
  resources,
  priority: opt(z.number().int().min(0).max(100)),
  volumes: opt(volumes),
  docker: opt(z.boolean()),
  repos: opt(z.array(repoSpec).max(1, "A maximum of one repo is currently supported")),
  files: opt(files),
  dstack: opt(z.boolean()),
  setup: opt(commands),
};

type RunRaw = { [K in keyof typeof runShape]?: z.output<(typeof runShape)[K]> };

function checkRun(r: RunRaw, ctx: z.RefinementCtx): void {
  if (r.image && r.python) ctx.addIssue({ code: "custom", path: ["python"], message: "`image` and `python` are mutually exclusive fields" });
  if (r.docker === true) {
    for (const other of ["image", "python", "nvcc"] as const) {
      if (r[other]) ctx.addIssue({ code: "custom", path: ["docker"], message: `\`${other}\` and \`docker\` are mutually exclusive fields` });
    }
  }
}

function normalizeRun(r: RunRaw, singleBranchDefault: boolean): RunConfigBase {
  return compact({
    ...normalizeProfile(r),
    name: und(r.name),
    image: und(r.image),
    user: und(r.user),
    privileged: r.privileged ?? false,
    entrypoint: und(r.entrypoint),
    workingDir: und(r.working_dir),
    registryAuth: r.registry_auth ? { username: r.registry_auth.username, password: r.registry_auth.password } : undefined,
    python: und(r.python),
    nvcc: r.nvcc ?? false,
    singleBranch: r.single_branch ?? singleBranchDefault,
    env: r.env ?? { values: {}, fromCli: [] },
    shell: und(r.shell),
    resources: r.resources ?? defaultResources(),
    priority: r.priority ?? 0,
    volumes: r.volumes ?? [],
    docker: r.docker ?? false,
    repos: r.repos ?? [],
    files: r.files ?? [],
    dstack: r.dstack ?? false,
    setup: r.setup ?? [],
    homeDir: und(r.home_dir),
  });
}

const GROUP_NAME_RE = /^[a-z0-9][a-z0-9-]{0,39}$/;
const groupName = opt(str.regex(GROUP_NAME_RE, "Group name should match regex '^[a-z0-9][a-z0-9-]{0,39}$'"));

function checkGroupNames(groups: { name?: string | null }[], what: string, ctx: z.RefinementCtx): void {
  const seen = new Map<string, number>();
  groups.forEach((g, i) => {
    const name = g.name ?? String(i);
    if (seen.has(name)) {
      ctx.addIssue({ code: "custom", path: ["groups", i, ...(g.name ? ["name"] : [])], message: `Duplicate ${what} group name \`${name}\`; each ${what} group must have a unique name` });
    }
    seen.set(name, i);
  });
}

// ---------------------------------------------------------------------------------------------
// task

const nodeGroup = strict({
  name: groupName,
  nodes: opt(z.number().int().min(1)),
  resources,
  commands: opt(commands),
  ports: opt(ports),
});

export const taskSchema = strict(
  {
    ...runShape,
    commands: opt(commands),
    ports: opt(ports),
    nodes: opt(z.number().int().min(1)),
    groups: opt(z.array(nodeGroup)),
  },
  "task",
)
  .superRefine((r, ctx) => {
    checkRun(r, ctx);
    if (r.groups) {
      if (r.nodes != null) ctx.addIssue({ code: "custom", path: ["groups"], message: "`nodes` and `groups` are mutually exclusive" });
      if (r.groups.length === 0) ctx.addIssue({ code: "custom", path: ["groups"], message: "`groups` cannot be an empty list" });
      for (const key of ["commands", "ports"] as const) {
        if (r[key]?.length) ctx.addIssue({ code: "custom", path: [key], message: `Top-level \`${key}\` is not allowed when \`groups\` is set; specify \`${key}\` in each node group instead` });
      }
      if (r.entrypoint != null) ctx.addIssue({ code: "custom", path: ["entrypoint"], message: "Top-level `entrypoint` is not allowed when `groups` is set; specify `commands` in each node group instead" });
      checkGroupNames(r.groups, "node", ctx);
      r.groups.forEach((g, i) => {
        if (!g.commands?.length && !r.image) {
          ctx.addIssue({ code: "custom", path: ["groups", i], message: `Node group '${g.name ?? i}': either \`commands\` must be set in the group, or \`image\` at the task level` });
        }
      });
    } else if (!r.commands?.length && !r.image) {
      ctx.addIssue({ code: "custom", path: [], message: "Either `commands` or `image` must be set" });
    }
  })
  .transform((r): TaskConfig => {
    const groups = r.groups?.map((g, i): NodeGroup => ({ name: g.name ?? String(i), nodes: g.nodes ?? 1, resources: g.resources, commands: g.commands ?? [], ports: g.ports ?? [] }));
    return compact({
      type: "task",
      ...normalizeRun(r, true),
      commands: r.commands ?? [],
      ports: r.ports ?? [],
      nodes: groups ? undefined : (r.nodes ?? 1),
      groups,
    });
  });

// ---------------------------------------------------------------------------------------------
// service

const SCALING_WINDOWS = [30, 60, 300];
const scaling = strict({
  metric: enumOf(["rps"] as const, "scaling metric"),
  target: z.number().gt(0),
  window: opt(duration.refine((w) => SCALING_WINDOWS.includes(w), "Window must be one of: `30s`, `60s`, `300s`")),
  scale_up_delay: opt(duration),
  scale_down_delay: opt(duration),
}).transform((s): ScalingPolicy => ({ metric: s.metric, target: s.target, window: s.window ?? 60, scaleUpDelay: s.scale_up_delay ?? 300, scaleDownDelay: s.scale_down_delay ?? 600 }));

const replicaRange = count.transform((r, ctx): Range => {
  if (r.max === undefined) {
    ctx.addIssue({ code: "custom", message: "The maximum number of replicas is required", input: r });
    return z.NEVER;
  }
  return { min: r.min ?? 0, max: r.max };
});

const replicaGroup = strict({
  name: groupName,
  replicas: opt(replicaRange),
  count: opt(replicaRange),
  scaling: opt(scaling),
  resources,
  spot_policy: opt(spotPolicy),
  reservation: opt(str),
  commands: opt(commands),
  image: opt(str),
  python: opt(pythonVersion),
  nvcc: opt(z.boolean()),
  docker: opt(z.boolean()),
  privileged: opt(z.boolean()),
  router: opt(strict({ type: opt(enumOf(["sglang", "dynamo"] as const, "router type")) })),
}).superRefine((g, ctx) => {
  const replicas = g.replicas ?? g.count;
  if (!replicas) ctx.addIssue({ code: "custom", path: [], message: "`replicas` is required in a replica group" });
  else if (replicas.min !== replicas.max && !g.scaling) ctx.addIssue({ code: "custom", path: [g.replicas ? "replicas" : "count"], message: "When you set `replicas` to a range, ensure to specify `scaling`" });
  else if (replicas.min === replicas.max && g.scaling) ctx.addIssue({ code: "custom", path: ["scaling"], message: "To use `scaling`, `replicas` must be set to a range" });
  if (g.image && g.python) ctx.addIssue({ code: "custom", path: ["python"], message: "`image` and `python` are mutually exclusive within a replica group" });
  if (g.docker === true) {
    for (const other of ["image", "python", "nvcc"] as const) {
      if (g[other]) ctx.addIssue({ code: "custom", path: ["docker"], message: `\`${other}\` and \`docker\` are mutually exclusive within a replica group` });
    }
    if (g.privileged === false) ctx.addIssue({ code: "custom", path: ["privileged"], message: "`privileged: false` is incompatible with `docker: true` within a replica group (docker-in-docker requires privileged mode)" });
  }
});

const modelSchema = choose<ServiceModel>((v) => {
  if (typeof v === "string") return z.string().min(1).transform((name) => ({ type: "chat" as const, name, format: "openai" as const, prefix: "/v1" }));
  if (!isRecord(v)) return "`model` must be a model name or a mapping with `name` and `format`";
  if (v.format === "tgi") {
    return strict({ type: opt(enumOf(["chat"] as const, "model type")), name: str, format: z.literal("tgi"), chat_template: opt(str), eos_token: opt(str) })
      .transform((m) => compact({ type: "chat" as const, name: m.name, format: "tgi" as const, chatTemplate: und(m.chat_template), eosToken: und(m.eos_token) }));
  }
  return strict({ type: opt(enumOf(["chat"] as const, "model type")), name: str, format: enumOf(["openai", "tgi"] as const, "model format"), prefix: opt(str) })
    .transform((m) => ({ type: "chat" as const, name: m.name, format: "openai" as const, prefix: m.prefix ?? "/v1" }));
});

const rateLimit = strict({
  prefix: opt(str.max(4094).regex(/^\/[^\s\\{}]*$/, "The prefix must start with `/` and contain no spaces, `\\`, `{` or `}`")),
  key: opt(
    choose<{ type: "ip_address" | "header"; header?: string }>((v) =>
      isRecord(v) && v.type === "header"
        ? strict({ type: z.literal("header"), header: str.max(500).regex(/^[a-zA-Z0-9-_]+$/) })
        : strict({ type: enumOf(["ip_address", "header"] as const, "rate limit key type") }),
    ),
  ),
  rps: z.number().min(1 / 60),
  burst: opt(z.number().int().min(0)),
}).transform((l): RateLimit => ({
  prefix: l.prefix ?? "/",
  key: l.key && l.key.type === "header" && "header" in l.key ? { type: "header", header: l.key.header as string } : { type: "ip_address" },
  rps: l.rps,
  burst: l.burst ?? 0,
}));

const probe = strict({
  type: enumOf(["http"] as const, "probe type"),
  url: opt(str.refine((u) => u.startsWith("/"), "Must start with `/`").refine((u) => u.length <= 2048, "Cannot be longer than 2048 characters")),
  method: opt(enumOf(["get", "post", "put", "delete", "patch", "head"] as const, "method")),
  headers: opt(z.array(strict({ name: str.min(1).max(256), value: str.min(1).max(2048) })).max(16)),
  body: opt(str.min(1).max(2048)),
  timeout: opt(duration.refine((t) => t >= 1, "Probe timeout cannot be shorter than 1s")),
  interval: opt(duration.refine((t) => t >= 1, "Probe interval cannot be shorter than 1s")),
  ready_after: opt(z.number().int().min(1)),
  until_ready: opt(z.boolean()),
})
  .superRefine((p, ctx) => {
    const method = p.method ?? "get";
    if (p.body != null && (method === "get" || method === "head")) ctx.addIssue({ code: "custom", path: ["body"], message: `Cannot set request body for the \`${method}\` method` });
  })
  .transform((p): Probe => compact({
    type: "http",
    url: p.url ?? "/",
    method: p.method ?? "get",
    headers: (p.headers ?? []).map((h) => ({ name: h.name, value: h.value })),
    body: und(p.body),
    timeout: p.timeout ?? 10,
    interval: p.interval ?? 15,
    readyAfter: p.ready_after ?? 1,
    untilReady: p.until_ready ?? false,
  }));

type ReplicaGroupRaw = z.output<typeof replicaGroup>;

export const serviceSchema = strict(
  {
    ...runShape,
    commands: opt(commands),
    port: grammar(parseServicePort),
    gateway: opt(choose<boolean | EntityRef>((v) => (typeof v === "boolean" ? z.boolean() : typeof v === "string" || isRecord(v) ? entityRef : "`gateway` must be `true`, `false`, or a gateway name"))),
    strip_prefix: opt(z.boolean()),
    model: opt(modelSchema),
    https: opt(choose<boolean | "auto">((v) => (typeof v === "boolean" ? z.boolean() : enumOf(["auto"] as const, "https value")))),
    auth: opt(z.boolean()),
    scaling: opt(scaling),
    rate_limits: opt(z.array(rateLimit)),
    probes: opt(z.array(probe)),
    replicas: opt(choose<Range | ReplicaGroupRaw[]>((v) => (Array.isArray(v) ? z.array(replicaGroup) : replicaRange))),
    groups: opt(z.array(replicaGroup)),
  },
  "service",
)
  .superRefine((r, ctx) => {
    checkRun(r, ctx);
    const legacyGroups = Array.isArray(r.replicas);
    const groupsKey = legacyGroups ? "replicas" : "groups";
    const groups = legacyGroups ? (r.replicas as ReplicaGroupRaw[]) : r.groups;
    if (r.groups && r.replicas != null) ctx.addIssue({ code: "custom", path: ["groups"], message: "`replicas` and `groups` are mutually exclusive" });
    if (!groups) {
      const replicas = r.replicas as Range | undefined | null;
      if (replicas && replicas.min !== replicas.max && !r.scaling) ctx.addIssue({ code: "custom", path: ["replicas"], message: "When you set `replicas` to a range, ensure to specify `scaling`" });
      if (r.scaling && (!replicas || replicas.min === replicas.max)) ctx.addIssue({ code: "custom", path: ["scaling"], message: "To use `scaling`, `replicas` must be set to a range" });
      if (!r.commands?.length && !r.image) ctx.addIssue({ code: "custom", path: [], message: "Either `commands` or `image` must be set" });
    } else {
      if (groups.length === 0) ctx.addIssue({ code: "custom", path: [groupsKey], message: "`groups` cannot be an empty list" });
      if (r.scaling) ctx.addIssue({ code: "custom", path: ["scaling"], message: "Top-level `scaling` is not allowed when `groups` is set; specify `scaling` in each replica group instead" });
      if (r.commands?.length) ctx.addIssue({ code: "custom", path: ["commands"], message: "Top-level `commands` is not allowed when `groups` is set; specify `commands` in each replica group instead" });
      const seen = new Map<string, number>();
      groups.forEach((g, i) => {
        const name = g.name ?? String(i);
        if (seen.has(name)) ctx.addIssue({ code: "custom", path: [groupsKey, i], message: `Duplicate replica group name \`${name}\`; each replica group must have a unique name` });
        seen.set(name, i);
        if (!g.commands?.length && !g.image && !r.image) {
          ctx.addIssue({ code: "custom", path: [groupsKey, i], message: `Replica group '${name}': either \`commands\` or \`image\` must be set in the group, or \`image\` at the service level` });
        }
        // A field is set at the service level or per group, never both: precedence would be ambiguous.
        const both: [string, boolean, unknown][] = [
          ["image", r.image != null, g.image],
          ["docker", r.docker === true, g.docker],
          ["privileged", r.privileged === true, g.privileged],
          ["python", r.python != null, g.python],
          ["nvcc", r.nvcc === true, g.nvcc],
          ["spot_policy", r.spot_policy != null, g.spot_policy],
          ["reservation", r.reservation != null, g.reservation],
        ];
        for (const [field, atService, atGroup] of both) {
          if (atService && atGroup != null) ctx.addIssue({ code: "custom", path: [groupsKey, i, field], message: `\`${field}\` is set at both the service level and in replica group '${name}'; set it in one place only` });
        }
        const sources: [string, boolean, string, unknown][] = [
          ["image", r.image != null, "docker", g.docker], ["image", r.image != null, "python", g.python], ["image", r.image != null, "nvcc", g.nvcc],
          ["docker", r.docker === true, "image", g.image], ["docker", r.docker === true, "python", g.python], ["docker", r.docker === true, "nvcc", g.nvcc],
          ["python", r.python != null, "image", g.image], ["python", r.python != null, "docker", g.docker],
          ["nvcc", r.nvcc === true, "image", g.image], ["nvcc", r.nvcc === true, "docker", g.docker],
        ];
        for (const [sField, sSet, gField, gVal] of sources) {
          if (sSet && gVal != null) ctx.addIssue({ code: "custom", path: [groupsKey, i, gField], message: `Service-level \`${sField}\` conflicts with group-level \`${gField}\` in replica group '${name}'; these image-source fields are mutually exclusive` });
        }
      });
      const routers = groups.map((g, i) => [g, i] as const).filter(([g]) => g.router != null);
      if (routers.length > 1) ctx.addIssue({ code: "custom", path: [groupsKey, routers[1]![1], "router"], message: "At most one replica group may specify `router`" });
      const first = routers[0];
      if (first) {
        const rep = first[0].replicas ?? first[0].count;
        if (rep && (rep.min !== 1 || rep.max !== 1)) ctx.addIssue({ code: "custom", path: [groupsKey, first[1], "router"], message: "For now a replica group with `router` must have `replicas: 1`" });
      }
    }
    const prefixes = new Set<string>();
    r.rate_limits?.forEach((l, i) => {
      if (prefixes.has(l.prefix)) ctx.addIssue({ code: "custom", path: ["rate_limits", i], message: `Prefix ${l.prefix} is used more than once; each rate limit should have a unique path prefix` });
      prefixes.add(l.prefix);
    });
    const probeKeys = new Set<string>();
    r.probes?.forEach((p, i) => {
      const key = JSON.stringify(p);
      if (probeKeys.has(key)) ctx.addIssue({ code: "custom", path: ["probes", i], message: "Probes must be unique" });
      probeKeys.add(key);
    });
  })
  .transform((r): ServiceConfig => {
    const rawGroups = Array.isArray(r.replicas) ? (r.replicas as ReplicaGroupRaw[]) : und(r.groups);
    const groups = rawGroups?.map((g, i): ReplicaGroup => compact({
      name: g.name ?? String(i),
      replicas: (g.replicas ?? g.count)!,
      scaling: und(g.scaling),
      resources: g.resources,
      spotPolicy: und(g.spot_policy),
      reservation: und(g.reservation),
      commands: g.commands ?? [],
      image: und(g.image),
      python: und(g.python),
      nvcc: und(g.nvcc),
      docker: und(g.docker),
      privileged: und(g.privileged),
      router: g.router ? { type: g.router.type ?? "sglang" } : undefined,
    }));
    return compact({
      type: "service",
      ...normalizeRun(r, true),
      commands: r.commands ?? [],
      port: r.port,
      gateway: und(r.gateway),
      stripPrefix: r.strip_prefix ?? true,
      model: und(r.model),
      https: r.https ?? true,
      auth: r.auth ?? true,
      scaling: und(r.scaling),
      rateLimits: r.rate_limits ?? [],
      probes: und(r.probes),
      replicas: groups ? undefined : ((r.replicas as Range | null | undefined) ?? { min: 1, max: 1 }),
      groups,
    });
  });

// ---------------------------------------------------------------------------------------------
// dev-environment

export const devEnvironmentSchema = strict(
  {
    ...runShape,
    ports: opt(ports),
    ide: opt(enumOf(["vscode", "cursor", "windsurf", "zed"] as const, "ide")),
    version: opt(choose<string>((v) => (typeof v === "number" ? z.number().transform(String) : str))),
    init: opt(commands),
    inactivity_duration: opt(offDuration),
  },
  "dev-environment",
)
  .superRefine((r, ctx) => {
    checkRun(r, ctx);
    if (r.entrypoint != null) ctx.addIssue({ code: "custom", path: ["entrypoint"], message: "entrypoint is not supported for dev-environment" });
    const inactivity = r.inactivity_duration;
    if (r.dstack && typeof inactivity === "number") ctx.addIssue({ code: "custom", path: ["inactivity_duration"], message: "`dstack` is not supported together with `inactivity_duration`" });
    if (r.version && r.ide == null) ctx.addIssue({ code: "custom", path: ["version"], message: "`version` requires `ide` to be set" });
    if (r.ide === "windsurf" && r.version && !/^.+@[a-f0-9]+$/.test(r.version)) {
      ctx.addIssue({ code: "custom", path: ["version"], message: `Invalid Windsurf version format: \`${r.version}\`. Expected format: \`version@commit\`` });
    }
  })
  .transform((r): DevEnvironmentConfig => compact({
    type: "dev-environment",
    ...normalizeRun(r, false),
    ports: r.ports ?? [],
    ide: und(r.ide),
    version: und(r.version),
    init: r.init ?? [],
    inactivityDuration: r.inactivity_duration ?? "off",
  }));

// ---------------------------------------------------------------------------------------------
// fleet

const blocks = choose<number | "auto">((v) => (v === "auto" ? z.literal("auto") : z.number({ error: "`blocks` must be a positive integer or `auto`" }).int().min(1)));

function isPrivateIp(ip: string): boolean | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (m) {
    const [a, b] = [Number(m[1]), Number(m[2])];
    if ([1, 2, 3, 4].some((i) => Number(m[i]) > 255)) return undefined;
    return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || a === 127 || (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127) || a === 0;
  }
  if (/^[0-9a-fA-F:]+$/.test(ip) && ip.includes(":")) {
    const lower = ip.toLowerCase();
    return lower.startsWith("fc") || lower.startsWith("fd") || lower.startsWith("fe80") || lower === "::1";
  }
  return undefined;
}

const proxyJump = strict({ hostname: str, port: opt(z.number().int()), user: str, identity_file: str }).transform(
  (p): ProxyJump => compact({ hostname: p.hostname, port: und(p.port), user: p.user, identityFile: p.identity_file }),
);

const sshHost = choose<SshHost>((v) => {
  if (typeof v === "string") return nonEmpty.transform((hostname) => ({ hostname }));
  return strict({
    hostname: str,
    port: opt(z.number().int()),
    user: opt(str),
    identity_file: opt(str),
    proxy_jump: opt(proxyJump),
    internal_ip: opt(str.superRefine((ip, ctx) => {
      const priv = isPrivateIp(ip);
      if (priv === undefined) ctx.addIssue({ code: "custom", message: "Invalid IP address" });
      else if (!priv) ctx.addIssue({ code: "custom", message: "IP address is not private" });
    })),
    blocks: opt(blocks),
  }).transform((h) => compact({ hostname: h.hostname, port: und(h.port), user: und(h.user), identityFile: und(h.identity_file), proxyJump: und(h.proxy_jump), internalIp: und(h.internal_ip), blocks: und(h.blocks) }));
});

const sshConfig = strict({
  user: opt(str),
  port: opt(z.number().int()),
  identity_file: opt(str),
  proxy_jump: opt(proxyJump),
  hosts: z.array(sshHost),
  network: opt(str.superRefine((net, ctx) => {
    const [ip, mask, extra] = net.split("/");
    const priv = ip ? isPrivateIp(ip) : undefined;
    if (priv === undefined || extra !== undefined || (mask !== undefined && !/^\d{1,3}$/.test(mask))) ctx.addIssue({ code: "custom", message: `Failed to parse network: ${net}` });
    else if (!priv) ctx.addIssue({ code: "custom", message: "Public network is specified when private network is required" });
  })),
}).transform((s) => compact({ user: und(s.user), port: und(s.port), identityFile: und(s.identity_file), proxyJump: und(s.proxy_jump), hosts: s.hosts, network: und(s.network) }));

const fleetNodes = choose<{ min?: number | null; target?: number | null; max?: number | null }>((v) => {
  if (typeof v === "string" || typeof v === "number") return count.transform((r) => ({ min: r.min, max: r.max, target: undefined as number | undefined }));
  return strict({ min: opt(z.number().int()), target: opt(z.number().int()), max: opt(z.number().int()) });
}).transform((n, ctx) => {
  const min = n.min ?? 0;
  const target = n.target ?? min;
  const max = und(n.max);
  if (min < 0) ctx.addIssue({ code: "custom", message: "min cannot be negative" });
  if (target < min) ctx.addIssue({ code: "custom", message: "target must not be less than min" });
  if (max !== undefined && max < min) ctx.addIssue({ code: "custom", message: "max must not be less than min" });
  else if (max !== undefined && max < target) ctx.addIssue({ code: "custom", message: "max must not be less than target" });
  return compact({ min, target, max });
});

export const fleetSchema = strict(
  {
    type: str,
    name: opt(str),
    placement: opt(enumOf(["any", "cluster"] as const, "placement")),
    blocks: opt(blocks),
    env: opt(env),
    ssh_config: opt(sshConfig),
    nodes: opt(fleetNodes),
    reservation: opt(str),
    resources: opt(resourcesSchema),
    backends: profileShape.backends,
    regions: profileShape.regions,
    availability_zones: profileShape.availability_zones,
    instance_types: profileShape.instance_types,
    spot_policy: profileShape.spot_policy,
    retry,
    max_price: profileShape.max_price,
    idle_duration: profileShape.idle_duration,
    tags,
    backend_options: backendOptions,
  },
  "fleet",
).transform((f): FleetConfig => compact({
  type: "fleet",
  name: und(f.name),
  placement: f.placement ?? "any",
  blocks: f.blocks ?? 1,
  env: f.env ?? { values: {}, fromCli: [] },
  nodes: und(f.nodes),
  sshConfig: und(f.ssh_config),
  reservation: und(f.reservation),
  resources: und(f.resources),
  backends: und(f.backends),
  regions: und(f.regions),
  availabilityZones: und(f.availability_zones),
  instanceTypes: und(f.instance_types),
  spotPolicy: f.spot_policy ?? "on-demand",
  retry: f.retry,
  maxPrice: und(f.max_price),
  idleDuration: f.idle_duration ?? 259200,
  tags: f.tags,
  backendOptions: f.backend_options?.length ? f.backend_options : undefined,
}));

// ---------------------------------------------------------------------------------------------
// volume

const volumeCommon = {
  type: str,
  backend: str,
  name: opt(str),
  size: opt(memory),
  auto_cleanup_duration: opt(idleDuration),
  tags,
};

function volumeOf(backend: string) {
  const withRegion = { ...volumeCommon, region: backend === "kubernetes" ? opt(str) : str };
  if (backend === "kubernetes") {
    return strict({
      ...withRegion,
      claim_name: opt(str),
      storage_class_name: opt(str),
      access_modes: opt(strList),
      read_only: opt(z.boolean()),
    }).transform((v): VolumeConfig => compact({
      type: "volume",
      backend: "kubernetes",
      name: und(v.name),
      region: v.region ?? "",
      size: und(v.size),
      autoCleanupDuration: v.auto_cleanup_duration ?? "off",
      tags: v.tags,
      claimName: und(v.claim_name),
      storageClassName: und(v.storage_class_name),
      accessModes: v.access_modes ?? ["ReadWriteOnce"],
      readOnly: v.read_only ?? false,
    }));
  }
  return strict({ ...withRegion, availability_zone: opt(str), volume_id: opt(str) }).transform((v): VolumeConfig => compact({
    type: "volume",
    backend: backend as VolumeConfig["backend"],
    name: und(v.name),
    region: v.region ?? "",
    availabilityZone: und(v.availability_zone),
    size: und(v.size),
    volumeId: und(v.volume_id),
    autoCleanupDuration: v.auto_cleanup_duration ?? "off",
    tags: v.tags,
  }));
}

const VOLUME_BACKENDS = ["aws", "gcp", "runpod", "kubernetes"] as const;
export const volumeSchema = choose<VolumeConfig>((v) => {
  const backend = isRecord(v) ? v.backend : undefined;
  if (typeof backend === "string" && (VOLUME_BACKENDS as readonly string[]).includes(backend)) return volumeOf(backend);
  // Validate the rest against the common fields so unknown fields and types are still reported.
  return strict({ ...volumeCommon, backend: enumOf(VOLUME_BACKENDS, "volume backend"), region: opt(str), availability_zone: opt(str), volume_id: opt(str), claim_name: opt(str), storage_class_name: opt(str), access_modes: opt(strList), read_only: opt(z.boolean()) }) as never;
});

// ---------------------------------------------------------------------------------------------
// gateway

export const gatewaySchema = strict(
  {
    type: str,
    name: opt(str),
    default: opt(z.boolean()),
    backend: backendType,
    region: str,
    instance_type: opt(str.min(1)),
    domain: opt(str),
    public_ip: opt(z.boolean()),
    // Absent: Let's Encrypt; `null`: no certificate.
    certificate: opt(
      choose<{ type?: "lets-encrypt" | "acm" | null; arn?: string }>((v) =>
        isRecord(v) && v.type === "acm" ? strict({ type: z.literal("acm"), arn: str }) : strict({ type: opt(enumOf(["lets-encrypt", "acm"] as const, "certificate type")) }),
      ),
    ),
    replicas: opt(z.number().int().min(1)),
    tags,
  },
  "gateway",
).transform((g): GatewayConfig => compact({
  type: "gateway",
  name: und(g.name),
  default: und(g.default),
  backend: g.backend,
  region: g.region,
  instanceType: und(g.instance_type),
  domain: und(g.domain),
  publicIp: g.public_ip ?? true,
  certificate: g.certificate === null ? null : g.certificate && g.certificate.type === "acm" ? { type: "acm" as const, arn: g.certificate.arn as string } : { type: "lets-encrypt" as const },
  replicas: g.replicas ?? 1,
  tags: g.tags,
}));

// ---------------------------------------------------------------------------------------------

export const CONFIGURATION_TYPES = ["task", "service", "dev-environment", "fleet", "volume", "gateway"] as const;

/** The schema for each `type:`; input is the YAML value as written, output the normalized config. */
export const configurationSchemas: Record<(typeof CONFIGURATION_TYPES)[number], z.ZodType<AnyConfig>> = {
  task: taskSchema,
  service: serviceSchema,
  "dev-environment": devEnvironmentSchema,
  fleet: fleetSchema,
  volume: volumeSchema,
  gateway: gatewaySchema,
};

// Built once: which type owns a field, for hints like "`port` is a field of service configurations".
otherTypeFields = new Map();
for (const [type, shape] of [
  ["task", taskSchema], ["service", serviceSchema], ["dev-environment", devEnvironmentSchema], ["fleet", fleetSchema], ["gateway", gatewaySchema],
] as const) {
  const keys = Object.keys((shape as unknown as { in: { def: { shape?: object; in?: { def: { shape: object } } } } }).in?.def?.shape ?? {});
  for (const k of keys) if (!otherTypeFields.has(k)) otherTypeFields.set(k, type);
}
for (const k of ["claim_name", "storage_class_name", "access_modes", "read_only", "volume_id", "size", "auto_cleanup_duration", "availability_zone"]) {
  if (!otherTypeFields.has(k)) otherTypeFields.set(k, "volume");
}

export { compact };
