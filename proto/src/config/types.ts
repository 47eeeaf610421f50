// The normalized, typed shape of a `.dstack.yml` configuration. Every shorthand is expanded,
// every default dstack applies is filled in, and every quantity has one unit:
// memory and disk sizes in GB (numbers), durations in seconds, ranges as {min?, max?}.

/** An inclusive range; a missing bound is open. `8` in YAML becomes {min: 8, max: 8}. */
export interface Range {
  min?: number;
  max?: number;
}

/** A duration in seconds, or "off" (no limit / never). */
export type OffableDuration = number | "off";

export type CpuArch = "x86" | "arm";
export type GpuVendor = "nvidia" | "amd" | "google" | "intel" | "tenstorrent";

export interface CpuRequirements {
  /** Unset: x86 for the default image, otherwise whatever the image supports. */
  arch?: CpuArch;
  /** Default `2..`. */
  count: Range;
}

export interface GpuRequirements {
  vendor?: GpuVendor;
  /** Alternatives, e.g. ["A10G", "A100"]. */
  names?: string[];
  /** `0..` when `gpu` is omitted, `1..` when a gpu spec without a count is given. */
  count: Range;
  /** Memory per GPU, GB. */
  memory?: Range;
  /** Total GPU memory across the GPUs, GB. */
  totalMemory?: Range;
  /** Minimum compute capability, "major.minor". */
  computeCapability?: string;
}

export interface DiskRequirements {
  /** GB; default `100GB..`. */
  size: Range;
}

export interface ResourceRequirements {
  cpu: CpuRequirements;
  /** GB; default `8GB..`. */
  memory: Range;
  /** GB; shared memory (`/dev/shm`). */
  shmSize?: number;
  gpu: GpuRequirements;
  disk: DiskRequirements;
}

/** A port mapping; `localPort` undefined means "any free local port" (`*:8080`). */
export interface PortMapping {
  localPort?: number;
  containerPort: number;
}

/** Environment: explicit values, plus bare keys whose values come from the CLI's environment or `-e`. */
export interface EnvSpec {
  values: Record<string, string>;
  fromCli: string[];
}

export interface NetworkVolumeMount {
  kind: "network";
  /** One of these volumes is mounted (alternatives across backends/regions). */
  names: string[];
  path: string;
}

export interface InstanceVolumeMount {
  kind: "instance";
  instancePath: string;
  path: string;
  optional: boolean;
}

export type VolumeMount = NetworkVolumeMount | InstanceVolumeMount;

export interface FileMapping {
  /** Relative to the configuration file's directory when relative. */
  localPath: string;
  /** Relative to the working directory when relative. */
  path: string;
}

export interface RepoRef {
  localPath?: string;
  url?: string;
  branch?: string;
  hash?: string;
  /** Default ".", the working directory. */
  path: string;
  ifExists: "error" | "skip";
}

export interface RegistryAuth {
  username: string;
  password: string;
}

export type RetryEvent = "no-capacity" | "interruption" | "error";

export interface RetryPolicy {
  onEvents: RetryEvent[];
  /** Seconds; default 1h. */
  duration: number;
}

export interface UtilizationPolicy {
  minGpuUtilization: number;
  timeWindow: number;
}

export interface Schedule {
  cron: string[];
}

/** `name` or `project/name`. */
export interface EntityRef {
  project?: string;
  name: string;
}

export type InstanceSelector =
  | { kind: "name"; name: string }
  | { kind: "hostname"; hostname: string }
  | { kind: "fleet"; fleet: EntityRef; instance: number };

export interface VastAiOptions {
  type: "vastai";
  offerOrder?: "score" | "price";
  minReliability?: number;
  minScore?: number;
}

export type BackendOptions = VastAiOptions;

export type SpotPolicy = "spot" | "on-demand" | "auto";
export type CreationPolicy = "reuse" | "reuse-or-create";
export type StartupOrder = "any" | "master-first" | "workers-first";
export type StopCriteria = "all-done" | "master-done";

export const BACKEND_TYPES = [
  "amddevcloud", "aws", "azure", "cloudrift", "crusoe", "cudo", "datacrunch", "digitalocean",
  "dstack", "gcp", "hotaisle", "jarvislabs", "kubernetes", "lambda", "remote", "nebius", "oci",
  "runpod", "tensordock", "vastai", "verda", "vultr", "slurm",
] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

/** Profile parameters: where and how runs are provisioned (also valid in profiles.yml). */
export interface ProfileParams {
  backends?: BackendType[];
  regions?: string[];
  availabilityZones?: string[];
  instanceTypes?: string[];
  reservation?: string;
  /** Default "on-demand". */
  spotPolicy: SpotPolicy;
  /** Undefined: no retry. */
  retry?: RetryPolicy;
  /** Default "off". */
  maxDuration: OffableDuration;
  /** Default 300 (5m). */
  stopDuration: OffableDuration;
  maxPrice?: number;
  /** Default "reuse-or-create". */
  creationPolicy: CreationPolicy;
  /** Default 300 (5m) for runs. */
  idleDuration: OffableDuration;
  utilizationPolicy?: UtilizationPolicy;
  /** Default "any". */
  startupOrder: StartupOrder;
  /** Default "all-done". */
  stopCriteria: StopCriteria;
  schedule?: Schedule;
  fleets?: EntityRef[];
  instances?: InstanceSelector[];
  tags?: Record<string, string>;
  backendOptions?: BackendOptions[];
}

export type PythonVersion = "3.9" | "3.10" | "3.11" | "3.12" | "3.13" | "3.14";

/** Fields shared by task, service and dev-environment. */
export interface RunConfigBase extends ProfileParams {
  name?: string;
  image?: string;
  /** `name_or_uid[:group]`. */
  user?: string;
  privileged: boolean;
  entrypoint?: string;
  workingDir?: string;
  registryAuth?: RegistryAuth;
  python?: PythonVersion;
  nvcc: boolean;
  /** Default true for tasks and services, false for dev environments. */
  singleBranch: boolean;
  env: EnvSpec;
  shell?: string;
  resources: ResourceRequirements;
  /** 0..100, default 0. */
  priority: number;
  volumes: VolumeMount[];
  /** Docker-in-Docker (implies privileged at run time). */
  docker: boolean;
  repos: RepoRef[];
  files: FileMapping[];
  /** Expose the dstack server inside the run. */
  dstack: boolean;
  /** Deprecated; runs before `init` in dev environments. */
  setup: string[];
  /** Deprecated; no effect. */
  homeDir?: string;
}

export interface NodeGroup {
  name: string;
  nodes: number;
  resources: ResourceRequirements;
  commands: string[];
  ports: PortMapping[];
}

export interface TaskConfig extends RunConfigBase {
  type: "task";
  commands: string[];
  ports: PortMapping[];
  /** Set (default 1) unless `groups` is used. */
  nodes?: number;
  groups?: NodeGroup[];
}

export interface ScalingPolicy {
  metric: "rps";
  target: number;
  /** Seconds: 30, 60 (default) or 300. */
  window: number;
  /** Default 300. */
  scaleUpDelay: number;
  /** Default 600. */
  scaleDownDelay: number;
}

export type ServiceModel =
  | { format: "openai"; type: "chat"; name: string; prefix: string }
  | { format: "tgi"; type: "chat"; name: string; chatTemplate?: string; eosToken?: string };

export interface RateLimit {
  prefix: string;
  key: { type: "ip_address" } | { type: "header"; header: string };
  rps: number;
  burst: number;
}

export type HttpMethod = "get" | "post" | "put" | "delete" | "patch" | "head";

export interface Probe {
  type: "http";
  url: string;
  method: HttpMethod;
  headers: { name: string; value: string }[];
  body?: string;
  timeout: number;
  interval: number;
  readyAfter: number;
  untilReady: boolean;
}

export interface ReplicaGroup {
  name: string;
  replicas: Range;
  scaling?: ScalingPolicy;
  resources: ResourceRequirements;
  spotPolicy?: SpotPolicy;
  reservation?: string;
  commands: string[];
  image?: string;
  python?: PythonVersion;
  nvcc?: boolean;
  docker?: boolean;
  privileged?: boolean;
  router?: { type: "sglang" | "dynamo" };
}

export interface ServiceConfig extends RunConfigBase {
  type: "service";
  commands: string[];
  port: PortMapping;
  /** Undefined: the default gateway if any; false: the in-server proxy; true: the default gateway. */
  gateway?: boolean | EntityRef;
  stripPrefix: boolean;
  model?: ServiceModel;
  https: boolean | "auto";
  auth: boolean;
  scaling?: ScalingPolicy;
  rateLimits: RateLimit[];
  /** Undefined: the default (a chat-completions probe when `model` is set); [] disables probes. */
  probes?: Probe[];
  /** Set (default 1) unless `groups` is used; min defaults to 0 in a range. */
  replicas?: Range;
  groups?: ReplicaGroup[];
}

export type Ide = "vscode" | "cursor" | "windsurf" | "zed";

export interface DevEnvironmentConfig extends RunConfigBase {
  type: "dev-environment";
  ports: PortMapping[];
  ide?: Ide;
  version?: string;
  init: string[];
  inactivityDuration: OffableDuration;
}

export interface ProxyJump {
  hostname: string;
  port?: number;
  user: string;
  identityFile: string;
  /** The private key's text, read from identityFile by the CLI (never parsed from YAML). */
  sshKey?: string;
}

export interface SshHost {
  hostname: string;
  port?: number;
  user?: string;
  identityFile?: string;
  proxyJump?: ProxyJump;
  internalIp?: string;
  blocks?: number | "auto";
  /** The private key's text, read from identityFile by the CLI (never parsed from YAML). */
  sshKey?: string;
}

export interface SshConfig {
  user?: string;
  port?: number;
  identityFile?: string;
  proxyJump?: ProxyJump;
  hosts: SshHost[];
  network?: string;
  /** The default private key's text, read from identityFile by the CLI (never parsed from YAML). */
  sshKey?: string;
}

export interface FleetNodes {
  min: number;
  target: number;
  max?: number;
}

export interface FleetConfig {
  type: "fleet";
  name?: string;
  /** Default "any". */
  placement: "any" | "cluster";
  /** Default 1. */
  blocks: number | "auto";
  env: EnvSpec;
  nodes?: FleetNodes;
  sshConfig?: SshConfig;
  reservation?: string;
  resources?: ResourceRequirements;
  backends?: BackendType[];
  regions?: string[];
  availabilityZones?: string[];
  instanceTypes?: string[];
  /** Default "on-demand". */
  spotPolicy: SpotPolicy;
  retry?: RetryPolicy;
  maxPrice?: number;
  /** Default 259200 (3d); only instances above nodes.min are reaped. */
  idleDuration: OffableDuration;
  tags?: Record<string, string>;
  backendOptions?: BackendOptions[];
}

export type VolumeBackend = "aws" | "gcp" | "runpod" | "kubernetes";

export interface VolumeConfig {
  type: "volume";
  backend: VolumeBackend;
  name?: string;
  /** "" for kubernetes when omitted. */
  region: string;
  availabilityZone?: string;
  /** GB. */
  size?: number;
  /** Register an existing disk (aws, gcp, runpod). */
  volumeId?: string;
  /** Default "off": keep the volume. */
  autoCleanupDuration: OffableDuration;
  tags?: Record<string, string>;
  // kubernetes
  claimName?: string;
  storageClassName?: string;
  /** kubernetes only; default ["ReadWriteOnce"]. */
  accessModes?: string[];
  /** kubernetes only; default false. */
  readOnly?: boolean;
}

export type GatewayCertificate = { type: "lets-encrypt" } | { type: "acm"; arn: string };

export interface GatewayConfig {
  type: "gateway";
  name?: string;
  default?: boolean;
  backend: BackendType;
  region: string;
  instanceType?: string;
  domain?: string;
  /** Default true. */
  publicIp: boolean;
  /** Default lets-encrypt; null disables TLS. */
  certificate: GatewayCertificate | null;
  /** Default 1. */
  replicas: number;
  tags?: Record<string, string>;
}

export type RunConfig = TaskConfig | ServiceConfig | DevEnvironmentConfig;
export type AnyConfig = RunConfig | FleetConfig | VolumeConfig | GatewayConfig;
export type ConfigType = AnyConfig["type"];
