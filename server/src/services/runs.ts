// Runs: plan, apply, list, get, stop, delete and watch. A run's jobs (nodes × replicas) and
// their first submissions are created in the apply transaction; from then on the scheduler
// (scheduler/, via JobsService) moves them, woken by the events published here after commit.
import { posix } from "node:path";
import { collectSecretReferences, type Ide, type ResourceRequirements, type RunConfig } from "@dstack/proto";
import { JobStatus, JobTerminationReason, RunStatus, RunTerminationReason, enumName, enumValue } from "../domain/enums.js";
import { withTransaction, type Em, type Orm } from "../db/database.js";
import { CodeBlob, Job, Member, Project, Run, User, build } from "../db/entities.js";
import { err } from "../errors.js";
import { isGlobalAdmin } from "../auth/permissions.js";
import type { Clock } from "../scheduler/clock.js";
import type { DomainEvent, EventBus } from "../scheduler/events.js";
import { isJobFinished, isRunFinished, resolveRetryPolicy, type RetryPolicy } from "./state-machines.js";
import type { OffersService, OfferView } from "./offers.js";
import { offersFrom } from "./offers.js";
import type { ProjectsService } from "./projects.js";
import { jobStatusMessage, runStatusMessage, type RunJobStatus } from "./status-messages.js";
import type { Principal } from "./users.js";

/** What a client submits (the RunSpec message, with the configuration already normalized). */
export interface RunSpecInput {
  runName?: string;
  configuration: RunConfig;
  configurationPath?: string;
  repoId?: string;
  repoCodeHash?: string;
  env?: Record<string, string>;
  runArgs?: string[];
  /** Anything else of the RunSpec (repo info, file archives, ssh key): stored and returned as is. */
  extra?: Record<string, unknown>;
}

/** dstack's default image; `-devel-` (with nvcc) when `nvcc: true`. */
export const DEFAULT_IMAGE = "dstackai/base:0.15-base-ubuntu24.04";
export const DEFAULT_DEVEL_IMAGE = "dstackai/base:0.15-devel-ubuntu24.04";
/** Docker-in-Docker (`docker: true`). */
export const DIND_IMAGE = "dstackai/dind";
/** The last command of a dev environment: keeps the container up in any image (busybox has no `sleep infinity`). */
export const DEV_ENVIRONMENT_KEEPALIVE = "tail -f /dev/null";
/** The repo directory in the container: where a dev environment opens when no working_dir is set. */
const REPO_DIR = "/workflow";

/** How each IDE opens a folder on an SSH host (the host is the run's entry in ~/.dstack/ssh/config). */
const IDE_LINKS: Record<Ide, { name: string; link: (host: string, dir: string) => string }> = {
  vscode: { name: "VS Code", link: (h, d) => `vscode://vscode-remote/ssh-remote+${h}${d}` },
  cursor: { name: "Cursor", link: (h, d) => `cursor://vscode-remote/ssh-remote+${h}${d}` },
  windsurf: { name: "Windsurf", link: (h, d) => `windsurf://vscode-remote/ssh-remote+${h}${d}` },
  zed: { name: "Zed", link: (h, d) => `zed://ssh/${h}${d}` },
};

/**
 * Commands a dev environment runs once its init is done: they print how to open it, in the run's
 * logs (so `dstack apply` and `dstack logs` show it), as dstack users expect.
 */
export function devEnvironmentGreeting(runName: string, ide: Ide | undefined, workingDir: string): string[] {
  const dir = posix.resolve(REPO_DIR, workingDir || ".");
  const lines = [
    ...(ide ? [`Open it in ${IDE_LINKS[ide].name}:`, `  ${IDE_LINKS[ide].link(runName, dir)}`, ""] : []),
    `Connect with SSH: ssh ${runName}`,
    `The dev environment runs until it is stopped: dstack stop ${runName}`,
  ];
  return [`printf '%s\\n' ${lines.map(shellQuote).join(" ")}`];
}

/** Working directory of the default image. */
export const DEFAULT_IMAGE_WORKING_DIR = "/dstack/run";

/** How the runner gets the repository (RepoInfo of the RunSpec, kept in `extra.repo`). */
export interface StoredRepo {
  type: "remote" | "local" | "virtual";
  url?: string;
  branch?: string;
  hash?: string;
  configName?: string;
  configEmail?: string;
  /** Empty = the working directory. */
  dir?: string;
  ifExists: "error" | "skip";
}

/**
 * The per-job part of a run spec the scheduler and the agents need. Built once at apply from the
 * configuration and the RunSpec; secret references stay references (`${{ secrets.NAME }}`) and
 * are resolved only when the job is dispatched, so no plaintext is ever stored here.
 */
export interface StoredJobSpec {
  jobName: string;
  replicaNum: number;
  jobNum: number;
  jobsPerReplica: number;
  resources: ResourceRequirements;
  commands: string[];
  /** The image to run: the configuration's, else dstack's default image. */
  image: string;
  /** Seconds; null = no limit. */
  maxDuration: number | null;
  /** Seconds of grace on a graceful stop; null = "off" (no grace). */
  stopDuration: number | null;
  retry: RetryPolicy | null;
  /** Only instances of these fleets; empty = any. */
  fleets: string[];
  maxPrice?: number;
  /** `name_or_uid[:group]` the commands run as; unset = the image's user. */
  user?: string;
  /** Privileged container (also implied by `docker: true`). */
  privileged: boolean;
  /** Entrypoint, as written; when set, commands are its arguments. */
  entrypoint?: string;
  /** Absolute shell path commands run with (`/bin/bash` for the default image, else `/bin/sh`). */
  shell: string;
  /** Configuration env with `-e` on top; values may reference secrets. */
  env: Record<string, string>;
  /** Names of the secrets `env` and `registryAuth` reference. */
  secretNames: string[];
  /** Empty = the image's working directory. */
  workingDir: string;
  /** Container ports the job exposes. */
  ports: number[];
  /** Private registry credentials; may reference secrets. */
  registryAuth?: { username: string; password: string };
  /** Host paths bind-mounted into the container. */
  instanceMounts: { instancePath: string; path: string; optional: boolean }[];
  /** Network volumes (names are alternatives). */
  volumeMounts: { names: string[]; path: string }[];
  repoId?: string;
  /** SHA-256 of the uploaded code blob (RunSpec.repo_code_hash). */
  repoCodeHash?: string;
  repo: StoredRepo;
  /** `files:` archives (by content hash) and where they go. */
  fileArchives: { hash: string; path: string }[];
  /** Clone only the branch. */
  singleBranch: boolean;
  /** The user's key for attaching (`ssh <run>`). */
  sshKeyPub?: string;
  runType: RunConfig["type"];
  /** Multi-node tasks: which nodes' commands start first (unset = any). */
  startupOrder?: "any" | "master-first" | "workers-first";
  /** Multi-node tasks: the run ends when all nodes are done, or when the master is (unset = all-done). */
  stopCriteria?: "all-done" | "master-done";
  /** `python:` ("3.12"): the runner makes the image's python3.12 `python`/`python3`. */
  python?: string;
}

export interface JobSubmissionView {
  id: string;
  submissionNum: number;
  status: JobStatus;
  terminationReason: number | null;
  terminationReasonMessage: string | null;
  exitStatus: number | null;
  submittedAt: Date;
  lastProcessedAt: Date;
  finishedAt: Date | null;
  instanceId: string | null;
  blocks: number;
  provisioningData: Record<string, unknown> | null;
  /** The run's deployment this submission runs. */
  deploymentNum: number;
  /** What `dstack ps` shows as the status, e.g. "exited (3)" (status-messages.ts). */
  statusMessage: string;
}

export interface JobView {
  spec: StoredJobSpec;
  submissions: JobSubmissionView[];
}

export interface RunView {
  id: string;
  projectName: string;
  user: string;
  runName: string;
  status: RunStatus;
  terminationReason: RunTerminationReason | null;
  submittedAt: Date;
  lastProcessedAt: Date;
  finishedAt: Date | null;
  runSpec: RunSpecInput & { runName: string };
  jobs: JobView[];
  latestJobSubmission: JobSubmissionView | null;
  deleted: boolean;
  priority: number;
  /** Bumped by each in-place update. */
  deploymentNum: number;
  /** What `dstack ps` shows as the status, e.g. "retrying", "pulling", "stopped" (status-messages.ts). */
  statusMessage: string;
}

export interface RunPlanView {
  projectName: string;
  user: string;
  runSpec: RunSpecInput & { runName: string };
  jobPlans: { spec: StoredJobSpec; offers: OfferView[]; totalOffers: number }[];
  currentResource: RunView | null;
  /** update: the active run takes the new spec in place (services: by a rolling deployment). */
  action: "create" | "recreate" | "update" | "blocked";
  /** What differs from the active run's spec (RunSpecDiff.fields); empty without one. */
  changedFields: string[];
}

export interface ListRunsQuery {
  projectName?: string;
  username?: string;
  repoId?: string;
  onlyActive?: boolean;
  includeJobs?: boolean;
  limit?: number;
  pageToken?: string;
}

export interface WatchUpdate {
  run: RunView | null;
  initialStateSent: boolean;
  changedAt: Date;
}

const ADJECTIVES = ["brave", "calm", "clever", "eager", "fancy", "gentle", "happy", "jolly", "kind", "lively", "lucky", "mighty", "nice", "proud", "quick", "silly", "smart", "swift", "witty", "zealous"];
const ANIMALS = ["ant", "bear", "cat", "crab", "deer", "dog", "eagle", "fox", "frog", "goat", "hawk", "lion", "mole", "owl", "panda", "seal", "shark", "tiger", "wolf", "zebra"];
const RUN_NAME_RE = /^[a-z][a-z0-9-]{0,40}$/;
const FINISHED = [RunStatus.TERMINATED, RunStatus.FAILED, RunStatus.DONE];

const secs = (d: number | "off"): number | null => (d === "off" ? null : d);

/** `sh`/`bash`/absolute path → the shell's path; default by image. */
function shellPath(shell: string | undefined, defaultImage: boolean): string {
  if (shell === "sh") return "/bin/sh";
  if (shell === "bash") return "/bin/bash";
  return shell ?? (defaultImage ? "/bin/bash" : "/bin/sh");
}

/** Quotes `run.args` for a POSIX shell, as `${{ run.args }}` expands to them. */
const shellQuote = (a: string) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'"'"'`)}'`);

function storedRepo(extra: Record<string, unknown> | undefined, hasCode: boolean, c: RunConfig): StoredRepo {
  const r = (extra?.repo ?? null) as Partial<StoredRepo> | null;
  if (r && (r.type === "remote" || r.type === "local" || r.type === "virtual")) return { ifExists: "error", ...r, type: r.type };
  const ref = c.repos[0];
  if (ref?.url) return { type: "remote", url: ref.url, ...(ref.branch ? { branch: ref.branch } : {}), ...(ref.hash ? { hash: ref.hash } : {}), dir: ref.path === "." ? "" : ref.path, ifExists: ref.ifExists };
  if (hasCode) return { type: "local", dir: ref && ref.path !== "." ? ref.path : "", ifExists: ref?.ifExists ?? "error" };
  return { type: "virtual", ifExists: "error" };
}

/** Jobs of a run: nodes × replicas (or the groups' sums), with each job's resources and what its agents need. */
export function buildJobSpecs(runName: string, c: RunConfig, spec: Partial<Omit<RunSpecInput, "configuration">> = {}): StoredJobSpec[] {
  const defaultImage = !c.image && !c.docker;
  const image = c.image ?? (c.docker ? DIND_IMAGE : c.nvcc ? DEFAULT_DEVEL_IMAGE : DEFAULT_IMAGE);
  const env = { ...c.env.values, ...(spec.env ?? {}) };
  const registryAuth = c.registryAuth ? { username: c.registryAuth.username, password: c.registryAuth.password } : undefined;
  const extra = spec.extra;
  const runArgs = (spec.runArgs ?? []).map(shellQuote).join(" ");
  const expand = (cmds: string[]) => cmds.map((x) => x.replace(/\$\{\{\s*run\.args\s*\}\}/g, runArgs));
  const ports = c.type === "service" ? [c.port.containerPort] : c.ports.map((p) => p.containerPort);
  const workingDir = (typeof extra?.workingDir === "string" && extra.workingDir) || c.workingDir || (defaultImage ? DEFAULT_IMAGE_WORKING_DIR : "");
  // RunSpec.file_archives as the API keeps them in `extra` ({archiveHash, path}).
  const fileArchives = (Array.isArray(extra?.fileArchives) ? (extra.fileArchives as { archiveHash?: unknown; hash?: unknown; path?: unknown }[]) : []).flatMap((f) => {
    const hash = f?.archiveHash ?? f?.hash;
    return typeof hash === "string" && hash && typeof f.path === "string" ? [{ hash: hash.toLowerCase(), path: f.path }] : [];
  });
  const common = {
    image,
    maxDuration: secs(c.maxDuration),
    stopDuration: secs(c.stopDuration),
    retry: resolveRetryPolicy(c.retry ? { onEvents: c.retry.onEvents, durationSeconds: c.retry.duration } : null),
    fleets: (c.fleets ?? []).map((f) => f.name),
    ...(c.maxPrice !== undefined ? { maxPrice: c.maxPrice } : {}),
    ...(c.user !== undefined ? { user: c.user } : {}),
    privileged: c.privileged || c.docker,
    ...(c.type !== "dev-environment" && c.entrypoint !== undefined ? { entrypoint: c.entrypoint } : {}),
    shell: shellPath(c.shell, defaultImage),
    env,
    secretNames: collectSecretReferences(c).filter((n, i, all) => all.indexOf(n) === i),
    workingDir,
    ports,
    ...(registryAuth ? { registryAuth } : {}),
    instanceMounts: c.volumes.flatMap((v) => (v.kind === "instance" ? [{ instancePath: v.instancePath, path: v.path, optional: v.optional }] : [])),
    volumeMounts: c.volumes.flatMap((v) => (v.kind === "network" ? [{ names: v.names, path: v.path }] : [])),
    ...(spec.repoId ? { repoId: spec.repoId } : {}),
    ...(spec.repoCodeHash ? { repoCodeHash: spec.repoCodeHash.toLowerCase() } : {}),
    repo: storedRepo(extra, Boolean(spec.repoCodeHash), c),
    fileArchives,
    singleBranch: c.singleBranch,
    ...(typeof extra?.sshKeyPub === "string" && extra.sshKeyPub ? { sshKeyPub: extra.sshKeyPub } : {}),
    runType: c.type,
    ...(c.python ? { python: c.python } : {}),
    ...(c.type === "task" ? { startupOrder: c.startupOrder, stopCriteria: c.stopCriteria } : {}),
  };
  const out: StoredJobSpec[] = [];
  const push = (replicaNum: number, jobNum: number, jobsPerReplica: number, resources: ResourceRequirements, commands: string[]) =>
    out.push({ ...common, jobName: `${runName}-${jobNum}-${replicaNum}`, replicaNum, jobNum, jobsPerReplica, resources, commands: expand(commands) });
  if (c.type === "task") {
    const groups = c.groups ?? [{ nodes: c.nodes ?? 1, resources: c.resources, commands: c.commands }];
    const total = groups.reduce((s, g) => s + g.nodes, 0);
    let jobNum = 0;
    for (const g of groups) for (let i = 0; i < g.nodes; i++) push(0, jobNum++, total, g.resources, g.commands);
  } else if (c.type === "service") {
    const groups = c.groups ?? [{ replicas: c.replicas ?? { min: 1, max: 1 }, resources: c.resources, commands: c.commands }];
    let replicaNum = 0;
    for (const g of groups) {
      const n = Math.max(1, g.replicas.min ?? 1);
      for (let i = 0; i < n; i++) push(replicaNum++, 0, 1, g.resources, g.commands);
    }
  } else {
    // A dev environment lives until it is stopped (or inactivity_duration ends it), not until init ends.
    push(0, 0, 1, c.resources, [...c.setup, ...c.init, ...devEnvironmentGreeting(runName, c.ide, workingDir), DEV_ENVIRONMENT_KEEPALIVE]);
  }
  return out;
}

/**
 * An autoscaled replica count kept across an in-place update: clipped into the new range, or
 * dropped (null: the range's minimum) when the service no longer scales.
 */
export function clampToScalingRange(count: number | null, c: RunConfig): number | null {
  if (count === null || c.type !== "service" || !c.scaling || c.groups || !c.replicas) return null;
  return Math.min(c.replicas.max ?? count, Math.max(1, c.replicas.min ?? 1, count));
}

/** JSON with sorted keys and no undefined members: equal values give equal text. */
function stableJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === "object" && !Array.isArray(x) ? Object.fromEntries(Object.entries(x as Record<string, unknown>).filter(([, y]) => y !== undefined).sort(([a], [b]) => (a < b ? -1 : 1))) : x,
  );
}

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Run spec fields any run may change in place (dstack's _UPDATABLE_SPEC_FIELDS). */
const UPDATABLE_SPEC = ["configuration_path", "configuration"];
/** ... and services, by a rolling deployment. */
const SERVICE_UPDATABLE_SPEC = ["repo_data", "repo_code_hash", "file_archives", "working_dir"];
/** Configuration properties changeable in place, by run type (dstack's _CONF_UPDATABLE_FIELDS and the type-specific lists). */
const UPDATABLE_CONF: Record<RunConfig["type"], string[]> = {
  task: ["priority"],
  "dev-environment": ["priority", "inactivity_duration"],
  service: [
    "priority",
    // in place
    "replicas",
    "groups",
    "scaling",
    // rolling deployment
    "port",
    "probes",
    "resources",
    "volumes",
    "docker",
    "files",
    "image",
    "user",
    "privileged",
    "entrypoint",
    "working_dir",
    "python",
    "nvcc",
    "single_branch",
    "env",
    "shell",
    "commands",
  ],
};

export interface RunSpecDiff {
  /** Changed run spec fields (`repo_code_hash`) and configuration properties (`configuration.commands`). */
  fields: string[];
  /** Whether the active run can take the new spec in place. */
  updatable: boolean;
}

/** The spec's top-level fields as dstack names them (`-e` values count as the configuration's env, run args as its commands). */
function specFields(s: RunSpecInput): Record<string, unknown> {
  const extra = s.extra ?? {};
  return {
    configuration_path: s.configurationPath ?? "",
    repo_id: s.repoId ?? "",
    repo_code_hash: s.repoCodeHash ?? "",
    repo_data: extra.repo ?? null,
    file_archives: extra.fileArchives ?? [],
    working_dir: extra.workingDir ?? "",
    ssh_key_pub: extra.sshKeyPub ?? "",
    profile_name: extra.profileName ?? "",
  };
}

function configFields(s: RunSpecInput): Record<string, unknown> {
  const c = s.configuration as unknown as Record<string, unknown>;
  return { ...c, env: { config: c.env, cli: s.env ?? {} }, commands: { commands: c.commands, args: s.runArgs ?? [] } };
}

/** What changed between an active run's spec and a new one, and whether dstack would update it in place. */
export function diffRunSpecs(current: RunSpecInput, next: RunSpecInput): RunSpecDiff {
  const fields: string[] = [];
  const a = specFields(current);
  const b = specFields(next);
  for (const k of Object.keys(a)) if (stableJson(a[k]) !== stableJson(b[k])) fields.push(k);
  const ca = configFields(current);
  const cb = configFields(next);
  const typeChanged = current.configuration.type !== next.configuration.type;
  if (typeChanged) fields.push("configuration.type");
  else for (const k of [...new Set([...Object.keys(ca), ...Object.keys(cb)])].sort()) if (stableJson(ca[k]) !== stableJson(cb[k])) fields.push(`configuration.${snake(k)}`);
  const type = next.configuration.type;
  const spec = [...UPDATABLE_SPEC, ...(type === "service" ? SERVICE_UPDATABLE_SPEC : [])];
  // Same archives: a moved local file changes nothing in the container (as dstack ignores `files`).
  const conf = [...UPDATABLE_CONF[type], ...(stableJson(a.file_archives) === stableJson(b.file_archives) ? ["files"] : [])];
  const updatable = !typeChanged && fields.every((f) => (f.startsWith("configuration.") ? conf.includes(f.slice("configuration.".length)) : spec.includes(f)));
  return { fields, updatable };
}

/** A job spec without what names its slot: equal ones run the same thing. */
const jobSpecKey = (j: StoredJobSpec) => stableJson({ ...j, jobName: "", replicaNum: 0 });

/** Every `files:` archive the spec names must be in the project already: a run must not fail late on a missing one. */
async function requireFileArchives(em: Em, project: { id: string; name: string }, spec: RunSpecInput): Promise<void> {
  const wanted = buildJobSpecs("run", spec.configuration, spec)[0]?.fileArchives ?? [];
  if (wanted.length === 0) return;
  const rows = await em.find(CodeBlob, { project: project.id, blobHash: { $in: [...new Set(wanted.map((f) => f.hash))] } }, { fields: ["blobHash"] });
  const have = new Set(rows.map((r) => r.blobHash));
  const gone = wanted.find((f) => !have.has(f.hash));
  if (gone) throw err("DSTACK_FILE_ARCHIVE_NOT_FOUND", { path: gone.path, hash: gone.hash, project: project.name });
}

type RawRow = { id: string } & Record<string, unknown>;
// Raw rows differ by driver: SQLite gives epoch-ms numbers and JSON text, PostgreSQL Dates and parsed JSON.
const date = (v: unknown): Date | null => (v === null || v === undefined ? null : v instanceof Date ? v : new Date(typeof v === "string" && /^\d+$/.test(v) ? Number(v) : (v as string | number)));
const json = (v: unknown): unknown => (typeof v === "string" ? JSON.parse(v) : v ?? null);

function encodeToken(run: { submittedAt: Date; id: string }): string {
  return Buffer.from(JSON.stringify([run.submittedAt.getTime(), run.id])).toString("base64url");
}
function decodeToken(token: string): { at: Date; id: string } {
  try {
    const [at, id] = JSON.parse(Buffer.from(token, "base64url").toString()) as [number, string];
    if (typeof at !== "number" || typeof id !== "string") throw new Error();
    return { at: new Date(at), id };
  } catch {
    throw err("DSTACK_BAD_PAGE_TOKEN");
  }
}

export function submissionView(j: Job): JobSubmissionView {
  return {
    id: j.id,
    submissionNum: j.submissionNum,
    status: j.status,
    terminationReason: j.terminationReason,
    terminationReasonMessage: j.terminationReasonMessage,
    exitStatus: j.exitStatus,
    submittedAt: j.submittedAt,
    lastProcessedAt: j.lastProcessedAt,
    finishedAt: j.finishedAt,
    instanceId: j.instance?.id ?? null,
    blocks: j.blocks,
    provisioningData: j.provisioningData,
    deploymentNum: j.deploymentNum,
    statusMessage: jobStatusMessage(j),
  };
}

export class RunsService {
  constructor(
    private readonly orm: Orm,
    private readonly projects: ProjectsService,
    private readonly offers: OffersService,
    private readonly bus: EventBus,
    private readonly clock: Clock,
  ) {}

  async plan(actor: Principal, projectName: string, spec: RunSpecInput, opts: { maxOffers?: number; includeBusy?: boolean } = {}): Promise<RunPlanView> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.apply");
    const runName = spec.runName ?? spec.configuration.name ?? "";
    const current = runName ? await em.findOne(Run, { project: project.id, runName, deleted: false }, { orderBy: { submittedAt: "desc" } }) : null;
    const jobs = buildJobSpecs(runName || "run", spec.configuration, spec);
    const candidates = await this.offers.candidates(project.id, em);
    const jobPlans = jobs.map((j) => {
      const all = offersFrom(candidates, { resources: j.resources, fleets: j.fleets, maxPrice: j.maxPrice, includeBusy: opts.includeBusy ?? true, wholeHost: j.jobsPerReplica > 1 });
      return { spec: j, offers: all.slice(0, opts.maxOffers || 50), totalOffers: all.length };
    });
    const currentView = current ? (await this.views(em, [current], project.name, true))[0]! : null;
    const diff = current ? diffRunSpecs(current.runSpec as unknown as RunSpecInput, spec) : null;
    // A stopping run takes no update (apply refuses it): the CLI waits for it to stop and submits anew.
    const action = !current ? "create" : isRunFinished(current.status) ? "recreate" : diff!.updatable && current.status !== RunStatus.TERMINATING ? "update" : "blocked";
    return { projectName: project.name, user: actor.name, runSpec: { ...spec, runName: runName || "" }, jobPlans, currentResource: currentView, action, changedFields: diff?.fields ?? [] };
  }

  /**
   * Submits a run: the run, its jobs and their first submissions in one transaction. Re-applying
   * the name of a finished run replaces it; of an active one is refused ("stop it first").
   */
  async apply(actor: Principal, projectName: string, spec: RunSpecInput, opts: { currentResourceId?: string; force?: boolean } = {}): Promise<RunView> {
    const requested = spec.runName ?? spec.configuration.name;
    if (requested !== undefined && !RUN_NAME_RE.test(requested)) {
      throw err("DSTACK_INVALID_NAME", { kind: "run", name: requested, max: 41, allowed: "lowercase letters, digits or '-', starting with a letter" });
    }
    const events: DomainEvent[] = [];
    const view = await withTransaction(this.orm, async (em) => {
      const { project } = await this.projects.authorize(em, actor, projectName, "runs.apply");
      const now = this.clock.now();
      let runName = requested;
      if (runName !== undefined) {
        const existing = await em.find(Run, { project: project.id, runName, deleted: false });
        const active = existing.find((r) => !isRunFinished(r.status));
        if (active) {
          if (opts.currentResourceId && opts.currentResourceId !== active.id) throw err("DSTACK_RUN_CHANGED", { run: runName });
          if (active.status === RunStatus.TERMINATING || !diffRunSpecs(active.runSpec as unknown as RunSpecInput, spec).updatable) {
            throw err("DSTACK_RUN_ACTIVE", { run: runName, status: enumName(RunStatus, active.status) });
          }
          await requireFileArchives(em, project, spec);
          return this.updateInPlace(em, active, { ...spec, runName }, project, now, events);
        }
        for (const old of existing) old.deleted = true;
      } else {
        runName = await this.generateName(em, project.id);
      }
      await requireFileArchives(em, project, spec);
      const stored = { ...spec, runName };
      const run = build(Run, {
        project: em.getReference(Project, project.id, { wrapped: true }),
        user: em.getReference(User, actor.id, { wrapped: true }),
        runName,
        status: RunStatus.SUBMITTED,
        runSpec: stored as unknown as Record<string, unknown>,
        submittedAt: now,
        lastProcessedAt: now,
        priority: spec.configuration.priority ?? 0,
      });
      em.persist(run);
      const created: Job[] = [];
      for (const js of buildJobSpecs(runName, spec.configuration, spec)) {
        const job = build(Job, {
          run: em.getReference(Run, run.id, { wrapped: true }),
          jobNum: js.jobNum,
          replicaNum: js.replicaNum,
          submissionNum: 0,
          status: JobStatus.SUBMITTED,
          jobSpec: js as unknown as Record<string, unknown>,
          submittedAt: now,
          lastProcessedAt: now,
        });
        em.persist(job);
        created.push(job);
        events.push({ kind: "job", id: job.id, projectId: project.id, runId: run.id });
      }
      // Watchers hear of the new run; the run reconciler has nothing to do until a job moves.
      events.unshift({ kind: "run", id: run.id, projectId: project.id, by: `run:${run.id}` });
      await em.flush();
      // Everything the view needs is in hand: no read-back.
      return {
        id: run.id,
        projectName: project.name,
        user: actor.name,
        runName,
        status: run.status,
        terminationReason: null,
        submittedAt: run.submittedAt,
        lastProcessedAt: run.lastProcessedAt,
        finishedAt: null,
        runSpec: stored,
        jobs: created.map((j) => ({ spec: j.jobSpec as unknown as StoredJobSpec, submissions: [submissionView(j)] })),
        latestJobSubmission: created.length ? submissionView(created[created.length - 1]!) : null,
        deleted: false,
        priority: run.priority,
        deploymentNum: run.deploymentNum,
        statusMessage: runStatusMessage(run, [], null),
      } satisfies RunView;
    });
    this.bus.publish(events);
    return view;
  }

  /**
   * An active run takes a new spec (dstack's apply_plan on an updatable run): a new deployment
   * number; replicas whose job specs do not change move to it at once, the others are replaced
   * by the run reconciler's rolling deployment (JobsService.processRun).
   */
  private async updateInPlace(em: Em, run: Run, stored: RunSpecInput & { runName: string }, project: { id: string; name: string }, now: Date, events: DomainEvent[]): Promise<RunView> {
    run.runSpec = stored as unknown as Record<string, unknown>;
    run.priority = stored.configuration.priority ?? 0;
    run.deploymentNum += 1;
    run.lastProcessedAt = now;
    run.desiredReplicaCount = clampToScalingRange(run.desiredReplicaCount, stored.configuration);
    const fresh = new Map(buildJobSpecs(run.runName, stored.configuration, stored).map((j) => [j.jobNum, jobSpecKey(j)]));
    for (const j of await em.find(Job, { run: run.id })) {
      if (isJobFinished(j.status) || j.status === JobStatus.TERMINATING) continue;
      if (fresh.get(j.jobNum) === jobSpecKey(j.jobSpec as unknown as StoredJobSpec)) j.deploymentNum = run.deploymentNum;
    }
    events.push({ kind: "run", id: run.id, projectId: project.id, by: `run:${run.id}` });
    await em.flush();
    return (await this.views(em, [run], project.name, true))[0]!;
  }

  async get(actor: Principal, projectName: string, by: { runName?: string; id?: string }): Promise<RunView> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.list");
    const run = by.id
      ? await em.findOne(Run, { project: project.id, id: by.id })
      : await em.findOne(Run, { project: project.id, runName: by.runName ?? "", deleted: false }, { orderBy: { submittedAt: "desc" } });
    if (!run) throw err("DSTACK_RUN_NOT_FOUND", { run: by.runName ?? by.id ?? "", project: projectName });
    return (await this.views(em, [run], project.name, true))[0]!;
  }

  /** Runs newest first, keyset-paginated by (submitted_at, id). */
  async list(actor: Principal, q: ListRunsQuery = {}): Promise<{ runs: RunView[]; nextPageToken: string }> {
    const em = this.orm.em.fork();
    const limit = Math.min(Math.max(q.limit || 100, 1), 1000);
    const projectIds = await this.visibleProjectIds(em, actor, q.projectName);
    const where: Record<string, unknown> = { deleted: false };
    if (projectIds !== "all") where.project = { $in: projectIds };
    if (q.onlyActive) where.status = { $nin: FINISHED };
    if (q.username) where.user = { name: q.username };
    if (q.pageToken) {
      const { at, id } = decodeToken(q.pageToken);
      where.$or = [{ submittedAt: { $lt: at } }, { submittedAt: at, id: { $lt: id } }];
    }
    // The `ps` hot path reads raw rows: entity hydration cost more than the queries here.
    let rows = (await em
      .createQueryBuilder(Run, "r")
      .select("*")
      .where(where)
      .orderBy([{ submittedAt: "desc" }, { id: "desc" }])
      .limit(limit + 1)
      .execute("all", false)) as unknown as RawRow[];
    if (q.repoId) rows = rows.filter((r) => (json(r.run_spec) as { repoId?: string }).repoId === q.repoId);
    const more = rows.length > limit;
    rows = rows.slice(0, limit);
    const views = await this.rawViews(em, rows, q.includeJobs ?? false);
    const last = views[views.length - 1];
    return { runs: views, nextPageToken: more && last ? encodeToken(last) : "" };
  }

  private async rawViews(em: Em, rows: readonly RawRow[], includeJobs: boolean): Promise<RunView[]> {
    if (rows.length === 0) return [];
    const ids = rows.map((r) => r.id);
    const jobRows = (await em
      .createQueryBuilder(Job, "j")
      .select("*")
      .where({ run: { $in: ids } })
      .orderBy([{ replicaNum: "asc" }, { jobNum: "asc" }, { submissionNum: "asc" }])
      .execute("all", false)) as unknown as RawRow[];
    const names = async (entity: typeof User | typeof Project, wanted: string[]) =>
      new Map(((await em.createQueryBuilder(entity, "x").select(["id", "name"]).where({ id: { $in: [...new Set(wanted)] } }).execute("all", false)) as unknown as RawRow[]).map((x) => [x.id, String(x.name)]));
    const users = await names(User, rows.map((r) => String(r.user_id)));
    const projects = await names(Project, rows.map((r) => String(r.project_id)));
    const byRun = new Map<string, JobSubmissionView[]>();
    // Per run, its jobs by (replica, job): submissions in order and the latest spec (raw until read).
    const jobsOf = new Map<string, Map<string, { submissions: JobSubmissionView[]; specRaw: unknown }>>();
    for (const j of jobRows) {
      const v: JobSubmissionView = {
        id: j.id,
        submissionNum: Number(j.submission_num),
        status: enumValue(JobStatus, String(j.status)) as JobStatus,
        terminationReason: j.termination_reason ? (enumValue(JobTerminationReason, String(j.termination_reason)) ?? null) : null,
        terminationReasonMessage: (j.termination_reason_message as string | null) ?? null,
        exitStatus: j.exit_status === null || j.exit_status === undefined ? null : Number(j.exit_status),
        submittedAt: date(j.submitted_at)!,
        lastProcessedAt: date(j.last_processed_at)!,
        finishedAt: date(j.finished_at),
        instanceId: (j.instance_id as string | null) ?? null,
        blocks: Number(j.blocks),
        provisioningData: (json(j.provisioning_data) as Record<string, unknown> | null) ?? null,
        deploymentNum: Number(j.deployment_num ?? 0),
        statusMessage: "",
      };
      v.statusMessage = jobStatusMessage(v);
      const runId = String(j.run_id);
      byRun.set(runId, [...(byRun.get(runId) ?? []), v]);
      const perRun = jobsOf.get(runId) ?? new Map<string, { submissions: JobSubmissionView[]; specRaw: unknown }>();
      jobsOf.set(runId, perRun);
      const key = `${String(j.replica_num)}/${String(j.job_num)}`;
      const job = perRun.get(key) ?? { submissions: [], specRaw: null };
      perRun.set(key, job);
      job.submissions.push(v);
      job.specRaw = j.job_spec;
    }
    return rows.map((r) => {
      const subs = byRun.get(r.id) ?? [];
      const latest = subs.length ? subs.reduce((a, b) => (b.submittedAt > a.submittedAt || (b.submittedAt.getTime() === a.submittedAt.getTime() && b.submissionNum > a.submissionNum) ? b : a)) : null;
      const runJobs = [...(jobsOf.get(r.id)?.values() ?? [])];
      const jobs: JobView[] = includeJobs ? runJobs.map((j) => ({ spec: json(j.specRaw) as StoredJobSpec, submissions: j.submissions })) : [];
      const status = enumValue(RunStatus, String(r.status)) as RunStatus;
      const terminationReason = r.termination_reason ? (enumValue(RunTerminationReason, String(r.termination_reason)) ?? null) : null;
      const forMessage: RunJobStatus[] = runJobs.map((j) => ({ submissions: j.submissions, retry: () => (json(j.specRaw) as StoredJobSpec | null)?.retry ?? null }));
      return {
        id: r.id,
        projectName: projects.get(String(r.project_id)) ?? "",
        user: users.get(String(r.user_id)) ?? "",
        runName: String(r.run_name),
        status,
        terminationReason,
        submittedAt: date(r.submitted_at)!,
        lastProcessedAt: date(r.last_processed_at)!,
        finishedAt: date(r.finished_at),
        runSpec: json(r.run_spec) as RunSpecInput & { runName: string },
        jobs,
        latestJobSubmission: latest,
        deleted: Boolean(r.deleted),
        priority: Number(r.priority),
        deploymentNum: Number(r.deployment_num ?? 0),
        statusMessage: runStatusMessage({ status, terminationReason }, forMessage, latest),
      };
    });
  }

  /** Graceful stop (stop_duration) or abort; stopping is asynchronous (watch the run). */
  async stop(actor: Principal, projectName: string, runNames: readonly string[], abort = false): Promise<void> {
    const events: DomainEvent[] = [];
    await withTransaction(this.orm, async (em) => {
      const { project } = await this.projects.authorize(em, actor, projectName, "runs.stop");
      for (const runName of runNames) {
        const run = await em.findOne(Run, { project: project.id, runName, deleted: false }, { orderBy: { submittedAt: "desc" } });
        if (!run) throw err("DSTACK_RUN_NOT_FOUND", { run: runName, project: projectName });
        if (isRunFinished(run.status)) continue;
        // An abort overrides a graceful stop already under way.
        if (run.status === RunStatus.TERMINATING && (!abort || run.terminationReason === RunTerminationReason.ABORTED_BY_USER)) continue;
        run.status = RunStatus.TERMINATING;
        run.terminationReason = abort ? RunTerminationReason.ABORTED_BY_USER : RunTerminationReason.STOPPED_BY_USER;
        run.lastProcessedAt = this.clock.now();
        events.push({ kind: "run", id: run.id, projectId: project.id });
      }
    });
    this.bus.publish(events);
  }

  /** Deletes finished runs (soft: rows stay for history). */
  async delete(actor: Principal, projectName: string, runNames: readonly string[]): Promise<void> {
    const events: DomainEvent[] = [];
    await withTransaction(this.orm, async (em) => {
      const { project } = await this.projects.authorize(em, actor, projectName, "runs.apply");
      for (const runName of runNames) {
        const run = await em.findOne(Run, { project: project.id, runName, deleted: false }, { orderBy: { submittedAt: "desc" } });
        if (!run) throw err("DSTACK_RUN_NOT_FOUND", { run: runName, project: projectName });
        if (!isRunFinished(run.status)) throw err("DSTACK_RUN_NOT_FINISHED", { run: runName, status: enumName(RunStatus, run.status) });
        run.deleted = true;
        events.push({ kind: "run", id: run.id, projectId: project.id });
      }
    });
    this.bus.publish(events);
  }

  /**
   * The current state of matching runs, a marker, then every change as it commits. Changes
   * are coalesced per run (a slow reader gets the latest state, never a stale one).
   */
  async *watch(
    actor: Principal,
    q: { projectName?: string; runNames?: readonly string[]; onlyActive?: boolean; includeJobs?: boolean },
    signal?: AbortSignal,
  ): AsyncGenerator<WatchUpdate> {
    const em0 = this.orm.em.fork();
    const projectIds = await this.visibleProjectIds(em0, actor, q.projectName);
    const dirty = new Set<string>();
    let wake: (() => void) | null = null;
    const unsubscribe = this.bus.subscribe((e) => {
      if (e.kind !== "run" && e.kind !== "job") return;
      if (projectIds !== "all" && !projectIds.includes(e.projectId)) return;
      const runId = e.kind === "run" ? e.id : e.runId;
      if (!runId) return;
      dirty.add(runId);
      wake?.();
    });
    const onAbort = () => wake?.();
    signal?.addEventListener("abort", onAbort);
    const names = q.runNames?.length ? new Set(q.runNames) : null;
    const seen = new Set<string>();
    try {
      const where: Record<string, unknown> = { deleted: false };
      if (projectIds !== "all") where.project = { $in: projectIds };
      if (q.onlyActive) where.status = { $nin: FINISHED };
      if (names) where.runName = { $in: [...names] };
      const initial = await em0.find(Run, where, { orderBy: [{ submittedAt: "desc" }, { id: "desc" }], limit: 1000, populate: ["project", "user"] });
      for (const v of await this.views(em0, initial, null, q.includeJobs ?? false)) {
        seen.add(v.id);
        yield { run: v, initialStateSent: false, changedAt: this.clock.now() };
      }
      yield { run: null, initialStateSent: true, changedAt: this.clock.now() };
      while (!signal?.aborted) {
        if (dirty.size === 0) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = null;
          continue;
        }
        const ids = [...dirty];
        dirty.clear();
        const em = this.orm.em.fork();
        const runs = await em.find(Run, { id: { $in: ids } }, { populate: ["project", "user"], orderBy: [{ submittedAt: "asc" }] });
        for (const v of await this.views(em, runs.filter((r) => !names || names.has(r.runName)), null, q.includeJobs ?? false)) {
          seen.add(v.id);
          yield { run: v, initialStateSent: false, changedAt: this.clock.now() };
        }
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private async visibleProjectIds(em: Em, actor: Principal, projectName?: string): Promise<string[] | "all"> {
    if (projectName) return [(await this.projects.authorize(em, actor, projectName, "runs.list")).project.id];
    if (isGlobalAdmin(actor)) return "all";
    return (await em.find(Member, { user: actor.id }, { fields: ["project"] })).map((m) => m.project.id);
  }

  private async generateName(em: Em, projectId: string): Promise<string> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const pick = <T>(a: readonly T[]) => a[Math.floor(Math.random() * a.length)]!;
      const name = `${pick(ADJECTIVES)}-${pick(ANIMALS)}-${1 + Math.floor(Math.random() * (attempt < 10 ? 9 : 999))}`;
      if ((await em.count(Run, { project: projectId, runName: name, deleted: false })) === 0) return name;
    }
    return `run-${Date.now().toString(36)}`;
  }

  /** Views of runs with their jobs, loading every job of the page in one query. */
  async views(em: Em, runs: readonly Run[], projectName: string | null, includeJobs: boolean): Promise<RunView[]> {
    if (runs.length === 0) return [];
    const jobs = await em.find(Job, { run: { $in: runs.map((r) => r.id) } }, { orderBy: { replicaNum: "asc", jobNum: "asc", submissionNum: "asc" } });
    const byRun = new Map<string, Job[]>();
    for (const j of jobs) byRun.set(j.run.id, [...(byRun.get(j.run.id) ?? []), j]);
    const userNames = new Map<string, string>();
    const missing = runs.filter((r) => !r.user.isInitialized()).map((r) => r.user.id);
    if (missing.length) for (const u of await em.find(User, { id: { $in: missing } })) userNames.set(u.id, u.name);
    const projectNames = new Map<string, string>();
    const missingP = runs.filter((r) => !r.project.isInitialized()).map((r) => r.project.id);
    if (missingP.length && projectName === null) for (const p of await em.find(Project, { id: { $in: missingP } })) projectNames.set(p.id, p.name);
    return runs.map((run) => {
      const mine = byRun.get(run.id) ?? [];
      const grouped = new Map<string, Job[]>();
      for (const j of mine) grouped.set(`${j.replicaNum}/${j.jobNum}`, [...(grouped.get(`${j.replicaNum}/${j.jobNum}`) ?? []), j]);
      const jobViews = [...grouped.values()].map((subs) => ({ spec: subs[subs.length - 1]!.jobSpec as unknown as StoredJobSpec, submissions: subs.map(submissionView) }));
      const latest = mine.length ? mine.reduce((a, b) => (b.submittedAt > a.submittedAt || (b.submittedAt.getTime() === a.submittedAt.getTime() && b.submissionNum > a.submissionNum) ? b : a)) : null;
      const latestView = latest ? submissionView(latest) : null;
      return {
        id: run.id,
        projectName: projectName ?? (run.project.isInitialized() ? run.project.getEntity().name : projectNames.get(run.project.id) ?? ""),
        user: run.user.isInitialized() ? run.user.getEntity().name : userNames.get(run.user.id) ?? "",
        runName: run.runName,
        status: run.status,
        terminationReason: run.terminationReason,
        submittedAt: run.submittedAt,
        lastProcessedAt: run.lastProcessedAt,
        finishedAt: run.finishedAt,
        runSpec: run.runSpec as unknown as RunSpecInput & { runName: string },
        jobs: includeJobs ? jobViews : [],
        latestJobSubmission: latestView,
        deleted: run.deleted,
        priority: run.priority,
        deploymentNum: run.deploymentNum,
        statusMessage: runStatusMessage(run, jobViews.map((j) => ({ submissions: j.submissions, retry: () => j.spec.retry ?? null })), latestView),
      };
    });
  }
}
