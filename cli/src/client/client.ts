// The high-level TypeScript API over the server's public Connect services; the `dstack` CLI is
// built on it. One Client talks to one server as one user in one project:
//
//   const client = Client.fromConfig();              // ~/.dstack/config.yml + DSTACK_* overrides
//   const plan = await client.runs.plan({ configuration: parseConfiguration(text, "x.yml") });
//   const run = await client.runs.apply(plan);
//   for await (const e of client.runs.logs(run.runSpec!.runName, { follow: true })) …
//
// Results are the generated protobuf messages (`@dstack/proto/api`); every failure is a
// DstackError with the server's message.
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Client as ConnectClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { toProtoConfiguration, toProtoResources, type AnyConfig, type FleetConfig, type GatewayConfig, type ResourceRequirements, type VolumeConfig } from "@dstack/proto";
import {
  FleetService,
  GatewayService,
  JobStatus,
  LogEventSource,
  LogService,
  MetricsService,
  OfferService,
  ProjectService,
  RepoType,
  RunService,
  RunSpecSchema,
  FileArchiveMappingSchema,
  RunStatus,
  SecretService,
  ServerService,
  UserService,
  VolumeService,
  type CreateFleetJoinTokenResponse,
  type Fleet,
  type Gateway,
  type Volume,
  type GetJobMetricsResponse,
  type GetServerInfoResponse,
  type JobSubmission,
  type ListOffersResponse,
  type OfferGroupBy,
  type Project,
  type Run,
  type RunPlan,
  type RunSpec,
  type Secret,
  type User,
  type WatchRunsResponse,
} from "@dstack/proto/api";
import { buildCodeArchive, buildFilesArchive, codeTooLargeError, filesTooLargeError, localRepoId, type CodeArchive, type CodeFile } from "./code.js";
import { resolveConfig, type ResolveOptions } from "./config.js";
import { DstackError, toDstackError } from "./errors.js";
import { followLogs, type LogBatch, type LogEntry, type LogSource, type LogStreamName } from "./logs.js";

export interface ClientOptions {
  serverUrl: string;
  token: string;
  project: string;
  /** A ready transport (tests, other protocols); default Connect over HTTP/1.1 with the bearer token. */
  transport?: Transport;
}

const FINISHED_RUN = new Set([RunStatus.TERMINATED, RunStatus.FAILED, RunStatus.DONE]);
const FINISHED_JOB = new Set([JobStatus.TERMINATED, JobStatus.ABORTED, JobStatus.FAILED, JobStatus.DONE]);

export const isRunFinished = (run: Pick<Run, "status">): boolean => FINISHED_RUN.has(run.status);
export const isJobFinished = (status: JobStatus): boolean => FINISHED_JOB.has(status);

/** The latest submission of job (replica, job) of a run, if the run carries its jobs. */
export function latestSubmission(run: Run, replica = 0, job = 0): JobSubmission | undefined {
  const j = run.jobs.find((x) => (x.jobSpec?.replicaNum ?? 0) === replica && (x.jobSpec?.jobNum ?? 0) === job);
  const subs = j?.jobSubmissions ?? [];
  return subs[subs.length - 1] ?? (replica === 0 && job === 0 ? run.latestJobSubmission : undefined);
}

/** What a run is submitted with; `configuration` is a parsed task, service or dev environment. */
export interface RunInput {
  configuration: AnyConfig;
  /** Run name; default the configuration's `name`, else the server picks one. */
  name?: string;
  /** Configuration file path (relative to the repo), for display. */
  configurationPath?: string;
  /** Environment overrides (`-e`); they win over the configuration's env. */
  env?: Record<string, string>;
  /** Arguments after `--`, available as `${{ run.args }}`. */
  runArgs?: string[];
  /** Local directory the code comes from; its id identifies the repo. */
  repoDir?: string;
  /** SHA-256 of code uploaded with `runs.uploadCode`. */
  repoCodeHash?: string;
  /** OpenSSH public key the run's containers accept for `ssh <run>` (RunSpec.ssh_key_pub). */
  sshKeyPub?: string;
  /** The configuration's `files:`, uploaded with `runs.uploadFiles`. */
  fileArchives?: UploadedFileArchive[];
}

export interface LogsOptions {
  /** Keep streaming until the run finishes (retries included). */
  follow?: boolean;
  /** Only entries at or after this time. */
  since?: Date;
  /** The runner's diagnostic log instead of the job's output. */
  diagnose?: boolean;
  replica?: number;
  job?: number;
  signal?: AbortSignal;
}

export interface UploadedFileArchive {
  /** SHA-256 of the archive. */
  archiveHash: string;
  /** Directory in the container it is extracted into. */
  path: string;
  /** The local path, as the configuration wrote it. */
  localPath: string;
  bytes: number;
  /** False when the server had it already and nothing was sent. */
  uploaded: boolean;
}

export interface UploadedCode {
  hash: string;
  repoId: string;
  bytes: number;
  files: CodeFile[];
  alreadyExists: boolean;
}

const SOURCES: Record<number, LogStreamName> = {
  [LogEventSource.STDOUT]: "stdout",
  [LogEventSource.STDERR]: "stderr",
  [LogEventSource.RUNNER]: "runner",
};

function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

export class Client {
  readonly serverUrl: string;
  readonly project: string;
  readonly runs: RunsApi;
  readonly fleets: FleetsApi;
  readonly secrets: SecretsApi;
  readonly projects: ProjectsApi;
  readonly offers: OffersApi;
  readonly server: ServerApi;
  readonly users: UsersApi;
  readonly volumes: VolumesApi;
  readonly gateways: GatewaysApi;
  /** @internal */
  readonly rpc: Rpc;

  /** A client for the project the config file and DSTACK_* variables select; explicit options win. */
  static fromConfig(opts: ResolveOptions = {}): Client {
    const c = resolveConfig(opts);
    return new Client({ serverUrl: c.serverUrl, token: c.token, project: c.project });
  }

  constructor(opts: ClientOptions) {
    this.serverUrl = opts.serverUrl.replace(/\/+$/, "");
    this.project = opts.project;
    let transport = opts.transport;
    if (!transport) {
      try {
        new URL(this.serverUrl);
      } catch {
        throw new DstackError("config", `Invalid server URL '${opts.serverUrl}': expected e.g. http://127.0.0.1:3000`);
      }
      transport = createConnectTransport({ baseUrl: this.serverUrl, httpVersion: "1.1", interceptors: [bearer(opts.token)] });
    }
    this.rpc = new Rpc(transport, this.serverUrl);
    this.runs = new RunsApi(this);
    this.fleets = new FleetsApi(this);
    this.secrets = new SecretsApi(this);
    this.projects = new ProjectsApi(this);
    this.offers = new OffersApi(this);
    this.server = new ServerApi(this);
    this.users = new UsersApi(this);
    this.volumes = new VolumesApi(this);
    this.gateways = new GatewaysApi(this);
  }
}

/** The generated Connect clients, with every error turned into a DstackError. */
class Rpc {
  readonly runs: ConnectClient<typeof RunService>;
  readonly logs: ConnectClient<typeof LogService>;
  readonly metrics: ConnectClient<typeof MetricsService>;
  readonly fleets: ConnectClient<typeof FleetService>;
  readonly secrets: ConnectClient<typeof SecretService>;
  readonly projects: ConnectClient<typeof ProjectService>;
  readonly offers: ConnectClient<typeof OfferService>;
  readonly server: ConnectClient<typeof ServerService>;
  readonly users: ConnectClient<typeof UserService>;
  readonly volumes: ConnectClient<typeof VolumeService>;
  readonly gateways: ConnectClient<typeof GatewayService>;

  constructor(
    transport: Transport,
    readonly serverUrl: string,
  ) {
    this.runs = createClient(RunService, transport);
    this.logs = createClient(LogService, transport);
    this.metrics = createClient(MetricsService, transport);
    this.fleets = createClient(FleetService, transport);
    this.secrets = createClient(SecretService, transport);
    this.projects = createClient(ProjectService, transport);
    this.offers = createClient(OfferService, transport);
    this.server = createClient(ServerService, transport);
    this.users = createClient(UserService, transport);
    this.volumes = createClient(VolumeService, transport);
    this.gateways = createClient(GatewayService, transport);
  }

  async call<T>(name: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw toDstackError(e, this.serverUrl, name);
    }
  }

  async *stream<T>(name: string, open: () => AsyncIterable<T>): AsyncGenerator<T> {
    try {
      yield* open();
    } catch (e) {
      throw toDstackError(e, this.serverUrl, name);
    }
  }
}

function runSpecOf(client: Client, input: RunInput): RunSpec {
  const c = input.configuration;
  if (c.type !== "task" && c.type !== "service" && c.type !== "dev-environment") {
    throw new DstackError("usage", `A ${c.type} configuration is not a run; apply it with client.${c.type === "fleet" ? "fleets" : `${c.type}s`}.apply.`);
  }
  const repoId = input.repoDir ? localRepoId(input.repoDir) : "";
  return create(RunSpecSchema, {
    runName: input.name ?? c.name ?? "",
    configuration: toProtoConfiguration(c),
    configurationPath: input.configurationPath ?? "",
    ...(repoId ? { repo: { repoId, repoType: input.repoCodeHash ? RepoType.LOCAL : RepoType.VIRTUAL } } : {}),
    repoCodeHash: input.repoCodeHash ?? "",
    env: input.env ?? {},
    runArgs: input.runArgs ?? [],
    sshKeyPub: input.sshKeyPub ?? "",
    fileArchives: (input.fileArchives ?? []).map((f) => ({ archiveHash: f.archiveHash, path: f.path })),
  });
}

const isPlan = (x: RunInput | RunPlan): x is RunPlan => (x as RunPlan).$typeName === "dstack.api.v1.RunPlan";

export class RunsApi {
  constructor(private readonly client: Client) {}

  private get rpc() {
    return this.client.rpc;
  }

  /** The RunSpec message `input` becomes (what plan and apply send). */
  spec(input: RunInput): RunSpec {
    return runSpecOf(this.client, input);
  }

  /** What applying would do: offers per job, and the active run of the same name if any. */
  async plan(input: RunInput, opts: { maxOffers?: number } = {}): Promise<RunPlan> {
    const runSpec = this.spec(input);
    const res = await this.rpc.call("GetRunPlan", () => this.rpc.runs.getRunPlan({ projectName: this.client.project, runSpec, maxOffers: opts.maxOffers ?? 0 }));
    if (!res.plan) throw new DstackError("internal", "The server returned no plan.");
    return res.plan;
  }

  /** Submits a run (or the run of a plan, failing if the active run changed since). */
  async apply(input: RunInput | RunPlan, opts: { force?: boolean; repoCodeHash?: string; fileArchives?: UploadedFileArchive[] } = {}): Promise<Run> {
    let runSpec: RunSpec;
    let currentResourceId = "";
    if (isPlan(input)) {
      runSpec = input.runSpec ?? create(RunSpecSchema);
      currentResourceId = input.currentResource?.id ?? "";
    } else runSpec = this.spec(input);
    if (opts.repoCodeHash) {
      runSpec = create(RunSpecSchema, { ...runSpec, repoCodeHash: opts.repoCodeHash, ...(runSpec.repo ? { repo: { ...runSpec.repo, repoType: RepoType.LOCAL } } : {}) });
    }
    if (opts.fileArchives) runSpec = create(RunSpecSchema, { ...runSpec, fileArchives: opts.fileArchives.map((f) => create(FileArchiveMappingSchema, { archiveHash: f.archiveHash, path: f.path })) });
    const res = await this.rpc.call("ApplyRun", () =>
      this.rpc.runs.applyRun({ projectName: this.client.project, runSpec, currentResourceId, force: opts.force ?? false }),
    );
    if (!res.run) throw new DstackError("internal", "The server returned no run.");
    return res.run;
  }

  /**
   * Runs of the project, newest first: unfinished ones, plus the newest finished one when
   * nothing is active (dstack's `ps`); `all` lists everything, `limit` caps the count.
   */
  async list(opts: { all?: boolean; limit?: number; includeJobs?: boolean } = {}): Promise<Run[]> {
    const includeJobs = opts.includeJobs ?? true;
    const page = (req: { onlyActive?: boolean; limit: number; pageToken?: string }) =>
      this.rpc.call("ListRuns", () => this.rpc.runs.listRuns({ projectName: this.client.project, includeJobs, ...req }));
    const max = opts.limit && opts.limit > 0 ? opts.limit : Infinity;
    if (!opts.all && !Number.isFinite(max)) {
      // dstack's default view: what is active, or else just the newest finished run.
      const active = await this.pages((token) => page({ onlyActive: true, limit: 1000, pageToken: token }), Infinity);
      return active.length > 0 ? active : (await page({ limit: 1 })).runs;
    }
    return this.pages((token) => page({ limit: Math.min(max, 1000), pageToken: token }), max);
  }

  private async pages(fetch: (token: string) => Promise<{ runs: Run[]; nextPageToken: string }>, max: number): Promise<Run[]> {
    const out: Run[] = [];
    let token = "";
    do {
      const res = await fetch(token);
      out.push(...res.runs);
      token = res.nextPageToken;
    } while (token && out.length < max);
    return Number.isFinite(max) ? out.slice(0, max) : out;
  }

  /** One run by name (its newest run of that name). */
  async get(name: string): Promise<Run> {
    const res = await this.rpc.call("GetRun", () => this.rpc.runs.getRun({ projectName: this.client.project, run: { case: "runName", value: name } }));
    if (!res.run) throw new DstackError("not_found", `Run '${name}' does not exist in project '${this.client.project}'.`);
    return res.run;
  }

  /**
   * A running job's live CPU, memory and GPU usage (`dstack metrics`): samples newest first, CPU in
   * percent of one CPU. Fails if the run is not running.
   */
  async metrics(name: string, opts: { replica?: number; job?: number } = {}): Promise<GetJobMetricsResponse> {
    return this.rpc.call("GetJobMetrics", () =>
      this.rpc.metrics.getJobMetrics({ projectName: this.client.project, runName: name, replicaNum: opts.replica ?? 0, jobNum: opts.job ?? 0 }),
    );
  }

  /** Stops runs: gracefully, or at once with `abort`. Returns when the server accepted it, not when they stopped. */
  async stop(names: string | string[], abort = false): Promise<void> {
    const runNames = Array.isArray(names) ? names : [names];
    await this.rpc.call("StopRuns", () => this.rpc.runs.stopRuns({ projectName: this.client.project, runNames, abort }));
  }

  /** Deletes finished runs. */
  async delete(names: string | string[]): Promise<void> {
    const runNames = Array.isArray(names) ? names : [names];
    await this.rpc.call("DeleteRuns", () => this.rpc.runs.deleteRuns({ projectName: this.client.project, runNames }));
  }

  /** The current state of the runs (all of the project's when `names` is empty), then every change. */
  watch(names: string[] = [], opts: { signal?: AbortSignal; onlyActive?: boolean; includeJobs?: boolean } = {}): AsyncGenerator<WatchRunsResponse> {
    return this.rpc.stream("WatchRuns", () =>
      this.rpc.runs.watchRuns(
        { projectName: this.client.project, runNames: names, onlyActive: opts.onlyActive ?? false, includeJobs: opts.includeJobs ?? true },
        { ...(opts.signal ? { signal: opts.signal } : {}) },
      ),
    );
  }

  /**
   * Builds the deterministic tar.gz of `dir` (or takes `archive`, already built from it) and
   * uploads it; pass the hash to apply (RunInput.repoCodeHash).
   */
  async uploadCode(dir: string, archive?: CodeArchive): Promise<UploadedCode> {
    archive ??= await buildCodeArchive(dir);
    const repoId = localRepoId(dir);
    try {
      const res = await this.rpc.call("UploadCode", () =>
        this.rpc.runs.uploadCode({ projectName: this.client.project, repoId, codeHash: archive.hash, blob: archive.blob }),
      );
      return { hash: archive.hash, repoId, bytes: archive.blob.byteLength, files: archive.files, alreadyExists: res.alreadyExists };
    } catch (e) {
      if (e instanceof DstackError && e.kind === "resource_exhausted") throw codeTooLargeError(dir, archive, e.message);
      throw e;
    }
  }

  /**
   * Packs each `files:` mapping (local paths relative to `baseDir`) and uploads the archives the
   * server does not hold yet; pass the result to apply (RunInput.fileArchives or opts).
   */
  async uploadFiles(mappings: readonly { localPath: string; path: string }[], baseDir: string, home?: string): Promise<UploadedFileArchive[]> {
    const out: UploadedFileArchive[] = [];
    for (const m of mappings) {
      const archive = await buildFilesArchive(m, baseDir, home);
      const projectName = this.client.project;
      const have = await this.rpc.call("GetFileArchive", () => this.rpc.runs.getFileArchive({ projectName, archiveHash: archive.hash }));
      if (!have.exists) {
        try {
          await this.rpc.call("UploadFileArchive", () => this.rpc.runs.uploadFileArchive({ projectName, archiveHash: archive.hash, blob: archive.blob }));
        } catch (e) {
          if (e instanceof DstackError && e.kind === "resource_exhausted") throw filesTooLargeError(archive, e.message);
          throw e;
        }
      }
      out.push({ archiveHash: archive.hash, path: archive.extractTo, localPath: m.localPath, bytes: archive.blob.byteLength, uploaded: !have.exists });
    }
    return out;
  }

  /**
   * The job's log entries: stored ones, and with `follow` new ones as they come, across
   * reconnects and retries, until the run finishes.
   */
  logs(name: string, opts: LogsOptions = {}): AsyncGenerator<LogEntry> {
    if (opts.follow) return followLogs(this.logSource(name, opts), { ...(opts.since ? { since: opts.since } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
    return this.pollLogs(name, opts);
  }

  private async *pollLogs(name: string, opts: LogsOptions): AsyncGenerator<LogEntry> {
    let nextToken = "";
    do {
      const res = await this.rpc.call("PollLogs", () =>
        this.rpc.logs.pollLogs(
          {
            projectName: this.client.project,
            runName: name,
            replicaNum: opts.replica ?? 0,
            jobNum: opts.job ?? 0,
            diagnose: opts.diagnose ?? false,
            limit: 1000,
            nextToken,
            ...(opts.since ? { startTime: timestampFromDate(opts.since) } : {}),
          },
          { ...(opts.signal ? { signal: opts.signal } : {}) },
        ),
      );
      for (const e of res.logs) yield toEntry(e);
      nextToken = res.nextToken;
    } while (nextToken);
  }

  /** The LogSource the follower uses for run `name` (exposed for tools that follow logs themselves). */
  logSource(name: string, opts: Pick<LogsOptions, "diagnose" | "replica" | "job"> = {}): LogSource {
    const rpc = this.rpc;
    const project = this.client.project;
    const replica = opts.replica ?? 0;
    const job = opts.job ?? 0;
    const runs = this;
    return {
      async *follow(req, signal): AsyncGenerator<LogBatch> {
        const stream = rpc.stream("FollowLogs", () =>
          rpc.logs.followLogs(
            {
              projectName: project,
              runName: name,
              replicaNum: replica,
              jobNum: job,
              jobSubmissionId: req.submissionId ?? "",
              diagnose: opts.diagnose ?? false,
              ...(req.since ? { since: timestampFromDate(req.since) } : {}),
            },
            { signal },
          ),
        );
        for await (const m of stream) yield { entries: m.logs.map(toEntry), finished: m.finished, submissionId: m.jobSubmissionId };
      },
      async nextSubmission(current, signal) {
        const ac = new AbortController();
        const stop = () => ac.abort();
        signal.addEventListener("abort", stop, { once: true });
        try {
          for await (const u of runs.watch([name], { signal: ac.signal, includeJobs: true })) {
            if (!u.run) continue;
            const sub = latestSubmission(u.run, replica, job);
            if (sub && sub.id !== current && !isJobFinished(sub.status)) return { submissionId: sub.id };
            if (isRunFinished(u.run)) return "finished";
          }
          // The watch ended (server shutting down): let the follower retry.
          throw new DstackError("unavailable", "The run watch ended.");
        } finally {
          signal.removeEventListener("abort", stop);
          ac.abort();
        }
      },
      isTransient: isTransientError,
    };
  }
}

/** Errors worth a reconnect: the server restarting or the network dropping. */
export function isTransientError(e: unknown): boolean {
  if (!(e instanceof DstackError)) return false;
  return e.kind === "unavailable" || e.kind === "deadline_exceeded" || e.kind === "unknown" || (e.kind === "internal" && !e.serverCode);
}

function toEntry(e: { timestamp?: Parameters<typeof timestampDate>[0]; source: LogEventSource; message: Uint8Array }): LogEntry {
  return { timestamp: e.timestamp ? timestampDate(e.timestamp) : new Date(0), source: SOURCES[e.source] ?? "stdout", message: e.message };
}

export class FleetsApi {
  constructor(private readonly client: Client) {}

  async list(opts: { includeDeleted?: boolean } = {}): Promise<Fleet[]> {
    const rpc = this.client.rpc;
    const out: Fleet[] = [];
    let pageToken = "";
    do {
      const res = await rpc.call("ListFleets", () => rpc.fleets.listFleets({ projectName: this.client.project, includeDeleted: opts.includeDeleted ?? false, pageToken }));
      out.push(...res.fleets);
      pageToken = res.nextPageToken;
    } while (pageToken);
    return out;
  }

  async get(name: string): Promise<Fleet> {
    const rpc = this.client.rpc;
    const res = await rpc.call("GetFleet", () => rpc.fleets.getFleet({ projectName: this.client.project, fleet: { case: "name", value: name } }));
    if (!res.fleet) throw new DstackError("not_found", `Fleet '${name}' does not exist in project '${this.client.project}'.`);
    return res.fleet;
  }

  /** Creates the fleet, or updates the fleet of the same name. */
  async apply(configuration: FleetConfig, opts: { configurationPath?: string; force?: boolean } = {}): Promise<Fleet> {
    const rpc = this.client.rpc;
    const proto = toProtoConfiguration(configuration).kind;
    const fleetConf = proto.case === "fleet" ? proto.value : undefined;
    if (!fleetConf) throw new DstackError("usage", `A ${configuration.type} configuration is not a fleet.`);
    const res = await rpc.call("ApplyFleet", () =>
      rpc.fleets.applyFleet({
        projectName: this.client.project,
        spec: { configuration: fleetConf, configurationPath: opts.configurationPath ?? "" },
        force: opts.force ?? false,
      }),
    );
    if (!res.fleet) throw new DstackError("internal", "The server returned no fleet.");
    return res.fleet;
  }

  async delete(names: string | string[]): Promise<void> {
    const rpc = this.client.rpc;
    await rpc.call("DeleteFleets", () => rpc.fleets.deleteFleets({ projectName: this.client.project, names: Array.isArray(names) ? names : [names] }));
  }

  /** A token a host agent enrolls into the fleet with (`dstack-shim --join-token`). */
  async joinToken(name: string, opts: { ttlSeconds?: number; maxUses?: number } = {}): Promise<CreateFleetJoinTokenResponse> {
    const rpc = this.client.rpc;
    return rpc.call("CreateFleetJoinToken", () =>
      rpc.fleets.createFleetJoinToken({
        projectName: this.client.project,
        fleetName: name,
        maxUses: opts.maxUses ?? 0,
        ...(opts.ttlSeconds ? { ttl: { seconds: BigInt(Math.round(opts.ttlSeconds)) } } : {}),
      }),
    );
  }
}

export class SecretsApi {
  constructor(private readonly client: Client) {}

  /** The project's secrets, names only: values never come back from the server. */
  async list(): Promise<Secret[]> {
    const rpc = this.client.rpc;
    return (await rpc.call("ListSecrets", () => rpc.secrets.listSecrets({ projectName: this.client.project }))).secrets;
  }

  async get(name: string): Promise<Secret> {
    const rpc = this.client.rpc;
    const res = await rpc.call("GetSecret", () => rpc.secrets.getSecret({ projectName: this.client.project, name }));
    if (!res.secret) throw new DstackError("not_found", `Secret '${name}' does not exist.`);
    return res.secret;
  }

  /** Creates the secret or replaces its value. */
  async set(name: string, value: string): Promise<void> {
    const rpc = this.client.rpc;
    await rpc.call("CreateOrUpdateSecret", () => rpc.secrets.createOrUpdateSecret({ projectName: this.client.project, name, value }));
  }

  async delete(names: string | string[]): Promise<void> {
    const rpc = this.client.rpc;
    await rpc.call("DeleteSecrets", () => rpc.secrets.deleteSecrets({ projectName: this.client.project, names: Array.isArray(names) ? names : [names] }));
  }
}

export class ProjectsApi {
  constructor(private readonly client: Client) {}

  /** Projects the user can see on the server. */
  async list(): Promise<Project[]> {
    const rpc = this.client.rpc;
    const out: Project[] = [];
    let pageToken = "";
    do {
      const res = await rpc.call("ListProjects", () => rpc.projects.listProjects({ pageToken }));
      out.push(...res.projects);
      pageToken = res.nextPageToken;
    } while (pageToken);
    return out;
  }

  async get(name: string = this.client.project): Promise<Project> {
    const rpc = this.client.rpc;
    const res = await rpc.call("GetProject", () => rpc.projects.getProject({ projectName: name }));
    if (!res.project) throw new DstackError("not_found", `Project '${name}' does not exist.`);
    return res.project;
  }

  /** Creates a project owned by the user, who becomes its admin. */
  async create(name: string, opts: { isPublic?: boolean } = {}): Promise<Project> {
    const rpc = this.client.rpc;
    const res = await rpc.call("CreateProject", () => rpc.projects.createProject({ projectName: name, isPublic: opts.isPublic ?? false }));
    if (!res.project) throw new DstackError("internal", "The server returned no project.");
    return res.project;
  }
}

export class OffersApi {
  constructor(private readonly client: Client) {}

  /** Offers matching the requirements, cheapest first; with `groupBy` (which must include GPU), GPU groups instead. */
  async list(opts: { resources?: ResourceRequirements; maxPrice?: number; fleets?: string[]; maxOffers?: number; groupBy?: OfferGroupBy[] } = {}): Promise<ListOffersResponse> {
    const rpc = this.client.rpc;
    return rpc.call("ListOffers", () =>
      rpc.offers.listOffers({
        projectName: this.client.project,
        requirements: {
          ...(opts.resources ? { resources: toProtoResources(opts.resources) } : {}),
          ...(opts.maxPrice !== undefined ? { maxPrice: opts.maxPrice } : {}),
          fleets: opts.fleets ?? [],
        },
        maxOffers: opts.maxOffers ?? 0,
        groupBy: opts.groupBy ?? [],
      }),
    );
  }
}

export class ServerApi {
  constructor(private readonly client: Client) {}

  async info(): Promise<GetServerInfoResponse> {
    const rpc = this.client.rpc;
    return rpc.call("GetServerInfo", () => rpc.server.getServerInfo({}));
  }
}

export class UsersApi {
  constructor(private readonly client: Client) {}

  /** The user the token belongs to. */
  async me(): Promise<User> {
    const rpc = this.client.rpc;
    const res = await rpc.call("GetMyUser", () => rpc.users.getMyUser({}));
    if (!res.user) throw new DstackError("internal", "The server returned no user.");
    return res.user;
  }
}

export class VolumesApi {
  constructor(private readonly client: Client) {}

  async list(): Promise<Volume[]> {
    const rpc = this.client.rpc;
    const out: Volume[] = [];
    let pageToken = "";
    do {
      const res = await rpc.call("ListVolumes", () => rpc.volumes.listVolumes({ projectName: this.client.project, pageToken }));
      out.push(...res.volumes);
      pageToken = res.nextPageToken;
    } while (pageToken);
    return out;
  }

  async get(name: string): Promise<Volume> {
    const rpc = this.client.rpc;
    const res = await rpc.call("GetVolume", () => rpc.volumes.getVolume({ projectName: this.client.project, name }));
    if (!res.volume) throw new DstackError("not_found", `Volume '${name}' does not exist in project '${this.client.project}'.`);
    return res.volume;
  }

  /** Creates (or registers an existing, with volume_id) network volume. */
  async create(configuration: VolumeConfig): Promise<Volume> {
    const rpc = this.client.rpc;
    const kind = toProtoConfiguration(configuration).kind;
    const conf = kind.case === "volume" ? kind.value : undefined;
    if (!conf) throw new DstackError("usage", `A ${configuration.type} configuration is not a volume.`);
    const res = await rpc.call("CreateVolume", () => rpc.volumes.createVolume({ projectName: this.client.project, configuration: conf }));
    if (!res.volume) throw new DstackError("internal", "The server returned no volume.");
    return res.volume;
  }

  async delete(names: string | string[]): Promise<void> {
    const rpc = this.client.rpc;
    await rpc.call("DeleteVolumes", () => rpc.volumes.deleteVolumes({ projectName: this.client.project, names: Array.isArray(names) ? names : [names] }));
  }
}

export class GatewaysApi {
  constructor(private readonly client: Client) {}

  async list(): Promise<Gateway[]> {
    const rpc = this.client.rpc;
    return (await rpc.call("ListGateways", () => rpc.gateways.listGateways({ projectName: this.client.project }))).gateways;
  }

  async get(name: string): Promise<Gateway> {
    const rpc = this.client.rpc;
    const res = await rpc.call("GetGateway", () => rpc.gateways.getGateway({ projectName: this.client.project, name }));
    if (!res.gateway) throw new DstackError("not_found", `Gateway '${name}' does not exist in project '${this.client.project}'.`);
    return res.gateway;
  }

  /** Creates the gateway or updates the one of the same name. */
  async apply(configuration: GatewayConfig, opts: { force?: boolean } = {}): Promise<Gateway> {
    const rpc = this.client.rpc;
    const kind = toProtoConfiguration(configuration).kind;
    const conf = kind.case === "gateway" ? kind.value : undefined;
    if (!conf) throw new DstackError("usage", `A ${configuration.type} configuration is not a gateway.`);
    const res = await rpc.call("ApplyGateway", () => rpc.gateways.applyGateway({ projectName: this.client.project, configuration: conf, force: opts.force ?? false }));
    if (!res.gateway) throw new DstackError("internal", "The server returned no gateway.");
    return res.gateway;
  }

  async delete(names: string | string[]): Promise<void> {
    const rpc = this.client.rpc;
    await rpc.call("DeleteGateways", () => rpc.gateways.deleteGateways({ projectName: this.client.project, names: Array.isArray(names) ? names : [names] }));
  }
}
