// Conversion between the normalized configuration (./types.ts) and the protobuf messages the
// server receives. The mapping is lossless: fromProto(toProto(c)) deep-equals c.
import { create } from "@bufbuild/protobuf";
import {
  BackendOptionsSchema,
  BlocksSchema,
  ConfigurationSchema,
  CpuSpecSchema,
  DevEnvironmentConfigurationSchema,
  DiskSpecSchema,
  EntityRefSchema,
  EnvSchema,
  FileMappingSchema,
  FleetInstanceSelectorSchema,
  HttpHeaderSchema,
  InstanceVolumeMountSchema,
  NetworkVolumeMountSchema,
  RegistryAuthSchema,
  RetryPolicySchema,
  ScheduleSchema,
  UtilizationPolicySchema,
  VastAiOptionsSchema,
  FleetConfigurationSchema,
  FleetNodesSchema,
  GatewayConfigurationSchema,
  GpuSpecSchema,
  InstanceSelectorSchema,
  IntRangeSchema,
  MemoryRangeSchema,
  NodeGroupSchema,
  OffableDurationSchema,
  PortMappingSchema,
  ProbeSchema,
  ProfileParamsSchema,
  ProxyJumpSchema,
  RateLimitSchema,
  RepoIfExists,
  RepoSpecSchema,
  ReplicaGroupSchema,
  ResourcesSpecSchema,
  RunConfigurationBaseSchema,
  ScalingPolicySchema,
  ServiceConfigurationSchema,
  ServiceModelSchema,
  SshConfigSchema,
  SshHostSchema,
  StringListSchema,
  TaskConfigurationSchema,
  VolumeConfigurationSchema,
  VolumeMountSchema,
  type Blocks as PbBlocks,
  type BackendOptions as PbBackendOptions,
  type Configuration,
  type EntityRef as PbEntityRef,
  type Env as PbEnv,
  type IntRange,
  type MemoryRange,
  type OffableDuration as PbOffableDuration,
  type PortMapping as PbPortMapping,
  type ProfileParams as PbProfileParams,
  type ProxyJump as PbProxyJump,
  type ResourcesSpec,
  type RetryPolicy as PbRetryPolicy,
  type RunConfigurationBase,
  type ScalingPolicy as PbScalingPolicy,
  type StringList,
} from "../../gen/dstack/api/v1/configuration_pb.js";
import type {
  AnyConfig,
  BackendOptions,
  BackendType,
  EntityRef,
  EnvSpec,
  FleetConfig,
  Ide,
  OffableDuration,
  PortMapping,
  ProfileParams,
  ProxyJump,
  PythonVersion,
  Range,
  ResourceRequirements,
  RetryEvent,
  RetryPolicy,
  RunConfigBase,
  ScalingPolicy,
  VolumeBackend,
  VolumeMount,
} from "./types.js";

// Enum order in TS lists = proto enum number - 1 (0 is UNSPECIFIED).
const SPOT = ["spot", "on-demand", "auto"] as const;
const CREATION = ["reuse", "reuse-or-create"] as const;
const STARTUP = ["any", "master-first", "workers-first"] as const;
const STOP = ["all-done", "master-done"] as const;
const RETRY_EVENTS = ["no-capacity", "interruption", "error"] as const;
const PLACEMENT = ["any", "cluster"] as const;

const toEnum = <T extends string>(list: readonly T[], v: T): number => list.indexOf(v) + 1;
function fromEnum<T extends string>(list: readonly T[], n: number, fallback: T): T {
  return list[n - 1] ?? fallback;
}

/** Sets only defined values, so optional proto fields stay unset. */
function defined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

const intRange = (r: Range): IntRange => create(IntRangeSchema, defined({ min: r.min, max: r.max }));
const memRange = (r: Range): MemoryRange => create(MemoryRangeSchema, defined({ minGb: r.min, maxGb: r.max }));
const fromIntRange = (r: IntRange | undefined): Range => defined({ min: r?.min, max: r?.max });
const fromMemRange = (r: MemoryRange | undefined): Range => defined({ min: r?.minGb, max: r?.maxGb });

const offDuration = (d: OffableDuration): PbOffableDuration =>
  create(OffableDurationSchema, { value: d === "off" ? { case: "off", value: true } : { case: "seconds", value: d } });
const fromOffDuration = (d: PbOffableDuration | undefined, fallback: OffableDuration): OffableDuration =>
  d?.value.case === "off" ? "off" : d?.value.case === "seconds" ? d.value.value : fallback;

const strList = (v: string[] | undefined): StringList | undefined => (v ? create(StringListSchema, { values: v }) : undefined);
const fromStrList = <T extends string = string>(v: StringList | undefined): T[] | undefined => (v ? (v.values as T[]) : undefined);

const entityRef = (r: EntityRef): PbEntityRef => create(EntityRefSchema, defined({ project: r.project, name: r.name }));
const fromEntityRef = (r: PbEntityRef | undefined): EntityRef => defined({ project: r?.project, name: r?.name ?? "" });

const port = (p: PortMapping): PbPortMapping => create(PortMappingSchema, defined({ localPort: p.localPort, containerPort: p.containerPort }));
const fromPort = (p: PbPortMapping | undefined): PortMapping => defined({ localPort: p?.localPort, containerPort: p?.containerPort ?? 0 });

const env = (e: EnvSpec): PbEnv => create(EnvSchema, { values: { ...e.values }, fromCli: [...e.fromCli] });
const fromEnv = (e: PbEnv | undefined): EnvSpec => ({ values: { ...(e?.values ?? {}) }, fromCli: [...(e?.fromCli ?? [])] });

const tagsOut = (t: Record<string, string> | undefined) => (t ? { ...t } : {});
const tagsIn = (t: Record<string, string>) => (Object.keys(t).length ? { ...t } : undefined);

const retry = (r: RetryPolicy | undefined): PbRetryPolicy | undefined =>
  r ? create(RetryPolicySchema, { onEvents: r.onEvents.map((e) => toEnum(RETRY_EVENTS, e)), durationSeconds: r.duration }) : undefined;
const fromRetry = (r: PbRetryPolicy | undefined): RetryPolicy | undefined =>
  r ? { onEvents: r.onEvents.map((e) => fromEnum<RetryEvent>(RETRY_EVENTS, e, "error")), duration: r.durationSeconds } : undefined;


const backendOptions = (o: BackendOptions[] | undefined): PbBackendOptions[] =>
  (o ?? []).map((b) => create(BackendOptionsSchema, { kind: { case: "vastai", value: create(VastAiOptionsSchema, defined({ offerOrder: b.offerOrder, minReliability: b.minReliability, minScore: b.minScore })) } }));
const fromBackendOptions = (o: PbBackendOptions[]): BackendOptions[] | undefined =>
  o.length
    ? o.flatMap((b): BackendOptions[] => (b.kind.case === "vastai" ? [defined({ type: "vastai" as const, offerOrder: b.kind.value.offerOrder as "score" | "price" | undefined, minReliability: b.kind.value.minReliability, minScore: b.kind.value.minScore })] : []))
    : undefined;

/** ResourceRequirements → ResourcesSpec. */
export function toProtoResources(r: ResourceRequirements): ResourcesSpec {
  return create(ResourcesSpecSchema, defined({
    cpu: create(CpuSpecSchema, { arch: r.cpu.arch ?? "", count: intRange(r.cpu.count) }),
    memory: memRange(r.memory),
    shmSizeGb: r.shmSize,
    gpu: create(GpuSpecSchema, defined({
      vendor: r.gpu.vendor ?? "",
      names: r.gpu.names ?? [],
      count: intRange(r.gpu.count),
      memory: r.gpu.memory ? memRange(r.gpu.memory) : undefined,
      totalMemory: r.gpu.totalMemory ? memRange(r.gpu.totalMemory) : undefined,
      computeCapability: r.gpu.computeCapability ?? "",
    })),
    disk: create(DiskSpecSchema, { size: memRange(r.disk.size) }),
  }));
}

/** ResourcesSpec → ResourceRequirements; missing parts take dstack's defaults. */
export function fromProtoResources(r: ResourcesSpec | undefined): ResourceRequirements {
  const g = r?.gpu;
  return defined({
    cpu: defined({ arch: (r?.cpu?.arch || undefined) as ResourceRequirements["cpu"]["arch"], count: r?.cpu?.count ? fromIntRange(r.cpu.count) : { min: 2 } }),
    memory: r?.memory ? fromMemRange(r.memory) : { min: 8 },
    shmSize: r?.shmSizeGb,
    gpu: defined({
      vendor: (g?.vendor || undefined) as ResourceRequirements["gpu"]["vendor"],
      names: g?.names.length ? [...g.names] : undefined,
      count: g?.count ? fromIntRange(g.count) : { min: 0 },
      memory: g?.memory ? fromMemRange(g.memory) : undefined,
      totalMemory: g?.totalMemory ? fromMemRange(g.totalMemory) : undefined,
      computeCapability: g?.computeCapability || undefined,
    }),
    disk: { size: r?.disk?.size ? fromMemRange(r.disk.size) : { min: 100 } },
  });
}

function profile(p: ProfileParams): PbProfileParams {
  return create(ProfileParamsSchema, defined({
    backends: strList(p.backends),
    regions: strList(p.regions),
    availabilityZones: strList(p.availabilityZones),
    instanceTypes: strList(p.instanceTypes),
    reservation: p.reservation,
    spotPolicy: toEnum(SPOT, p.spotPolicy),
    retry: retry(p.retry),
    maxDuration: offDuration(p.maxDuration),
    stopDuration: offDuration(p.stopDuration),
    maxPrice: p.maxPrice,
    creationPolicy: toEnum(CREATION, p.creationPolicy),
    idleDuration: offDuration(p.idleDuration),
    utilizationPolicy: p.utilizationPolicy ? create(UtilizationPolicySchema, { minGpuUtilization: p.utilizationPolicy.minGpuUtilization, timeWindowSeconds: p.utilizationPolicy.timeWindow }) : undefined,
    startupOrder: toEnum(STARTUP, p.startupOrder),
    stopCriteria: toEnum(STOP, p.stopCriteria),
    schedule: p.schedule ? create(ScheduleSchema, { cron: [...p.schedule.cron] }) : undefined,
    fleets: (p.fleets ?? []).map(entityRef),
    fleetsSet: p.fleets !== undefined,
    instances: (p.instances ?? []).map((s) =>
      create(InstanceSelectorSchema, {
        kind: s.kind === "name" ? { case: "name", value: s.name } : s.kind === "hostname" ? { case: "hostname", value: s.hostname } : { case: "fleetInstance", value: create(FleetInstanceSelectorSchema, { fleet: entityRef(s.fleet), instance: s.instance }) },
      }),
    ),
    tags: tagsOut(p.tags),
    backendOptions: backendOptions(p.backendOptions),
  }));
}

function fromProfile(p: PbProfileParams | undefined, idleDefault: number): ProfileParams {
  return defined({
    backends: fromStrList<BackendType>(p?.backends),
    regions: fromStrList(p?.regions),
    availabilityZones: fromStrList(p?.availabilityZones),
    instanceTypes: fromStrList(p?.instanceTypes),
    reservation: p?.reservation,
    spotPolicy: fromEnum(SPOT, p?.spotPolicy ?? 0, "on-demand"),
    retry: fromRetry(p?.retry),
    maxDuration: fromOffDuration(p?.maxDuration, "off"),
    stopDuration: fromOffDuration(p?.stopDuration, 300),
    maxPrice: p?.maxPrice,
    creationPolicy: fromEnum(CREATION, p?.creationPolicy ?? 0, "reuse-or-create"),
    idleDuration: fromOffDuration(p?.idleDuration, idleDefault),
    utilizationPolicy: p?.utilizationPolicy ? { minGpuUtilization: p.utilizationPolicy.minGpuUtilization, timeWindow: p.utilizationPolicy.timeWindowSeconds } : undefined,
    startupOrder: fromEnum(STARTUP, p?.startupOrder ?? 0, "any"),
    stopCriteria: fromEnum(STOP, p?.stopCriteria ?? 0, "all-done"),
    schedule: p?.schedule ? { cron: [...p.schedule.cron] } : undefined,
    fleets: p?.fleetsSet ? p.fleets.map(fromEntityRef) : undefined,
    instances: p?.instances.length
      ? p.instances.map((s) =>
          s.kind.case === "name" ? { kind: "name" as const, name: s.kind.value }
          : s.kind.case === "hostname" ? { kind: "hostname" as const, hostname: s.kind.value }
          : { kind: "fleet" as const, fleet: fromEntityRef(s.kind.value?.fleet), instance: s.kind.value?.instance ?? 0 })
      : undefined,
    tags: tagsIn(p?.tags ?? {}),
    backendOptions: fromBackendOptions(p?.backendOptions ?? []),
  });
}

function runBase(c: RunConfigBase): RunConfigurationBase {
  return create(RunConfigurationBaseSchema, defined({
    name: c.name,
    image: c.image,
    user: c.user,
    privileged: c.privileged,
    entrypoint: c.entrypoint,
    workingDir: c.workingDir,
    registryAuth: c.registryAuth ? create(RegistryAuthSchema, { ...c.registryAuth }) : undefined,
    python: c.python,
    nvcc: c.nvcc,
    singleBranch: c.singleBranch,
    env: env(c.env),
    shell: c.shell,
    resources: toProtoResources(c.resources),
    priority: c.priority,
    volumes: c.volumes.map((v) =>
      create(VolumeMountSchema, {
        kind: v.kind === "network"
          ? { case: "network", value: create(NetworkVolumeMountSchema, { names: [...v.names], path: v.path }) }
          : { case: "instance", value: create(InstanceVolumeMountSchema, { instancePath: v.instancePath, path: v.path, optional: v.optional }) },
      }),
    ),
    docker: c.docker,
    repos: c.repos.map((r) => create(RepoSpecSchema, defined({ localPath: r.localPath, url: r.url, branch: r.branch, hash: r.hash, path: r.path, ifExists: r.ifExists === "skip" ? RepoIfExists.SKIP : RepoIfExists.ERROR }))),
    files: c.files.map((f) => create(FileMappingSchema, { localPath: f.localPath, path: f.path })),
    dstack: c.dstack,
    setup: [...c.setup],
    homeDir: c.homeDir,
    profile: profile(c),
  }));
}

function fromRunBase(b: RunConfigurationBase | undefined): RunConfigBase {
  return defined({
    ...fromProfile(b?.profile, 300),
    name: b?.name,
    image: b?.image,
    user: b?.user,
    privileged: b?.privileged ?? false,
    entrypoint: b?.entrypoint,
    workingDir: b?.workingDir,
    registryAuth: b?.registryAuth ? { username: b.registryAuth.username, password: b.registryAuth.password } : undefined,
    python: b?.python as PythonVersion | undefined,
    nvcc: b?.nvcc ?? false,
    singleBranch: b?.singleBranch ?? false,
    env: fromEnv(b?.env),
    shell: b?.shell,
    resources: fromProtoResources(b?.resources),
    priority: b?.priority ?? 0,
    volumes: (b?.volumes ?? []).flatMap((v): VolumeMount[] =>
      v.kind.case === "network" ? [{ kind: "network" as const, names: [...v.kind.value.names], path: v.kind.value.path }]
      : v.kind.case === "instance" ? [{ kind: "instance" as const, instancePath: v.kind.value.instancePath, path: v.kind.value.path, optional: v.kind.value.optional }]
      : [],
    ),
    docker: b?.docker ?? false,
    repos: (b?.repos ?? []).map((r) => defined({ localPath: r.localPath, url: r.url, branch: r.branch, hash: r.hash, path: r.path || ".", ifExists: r.ifExists === RepoIfExists.SKIP ? ("skip" as const) : ("error" as const) })),
    files: (b?.files ?? []).map((f) => ({ localPath: f.localPath, path: f.path })),
    dstack: b?.dstack ?? false,
    setup: [...(b?.setup ?? [])],
    homeDir: b?.homeDir,
  });
}

const scaling = (s: ScalingPolicy | undefined): PbScalingPolicy | undefined =>
  s ? create(ScalingPolicySchema, { metric: s.metric, target: s.target, windowSeconds: s.window, scaleUpDelaySeconds: s.scaleUpDelay, scaleDownDelaySeconds: s.scaleDownDelay }) : undefined;
const fromScaling = (s: PbScalingPolicy | undefined): ScalingPolicy | undefined =>
  s ? { metric: "rps", target: s.target, window: s.windowSeconds, scaleUpDelay: s.scaleUpDelaySeconds, scaleDownDelay: s.scaleDownDelaySeconds } : undefined;

const blocks = (b: number | "auto"): PbBlocks => create(BlocksSchema, { value: b === "auto" ? { case: "auto", value: true } : { case: "count", value: b } });
const fromBlocks = (b: PbBlocks | undefined): number | "auto" | undefined => (b?.value.case === "auto" ? "auto" : b?.value.case === "count" ? b.value.value : undefined);

const proxyJump = (p: ProxyJump | undefined): PbProxyJump | undefined =>
  p ? create(ProxyJumpSchema, defined({ hostname: p.hostname, port: p.port, user: p.user, identityFile: p.identityFile, sshKey: p.sshKey })) : undefined;
const fromProxyJump = (p: PbProxyJump | undefined): ProxyJump | undefined =>
  p ? defined({ hostname: p.hostname, port: p.port, user: p.user, identityFile: p.identityFile, sshKey: p.sshKey }) : undefined;

/** The normalized configuration → the `Configuration` message. */
export function toProtoConfiguration(config: AnyConfig): Configuration {
  switch (config.type) {
    case "task":
      return create(ConfigurationSchema, {
        kind: {
          case: "task",
          value: create(TaskConfigurationSchema, defined({
            base: runBase(config),
            commands: [...config.commands],
            ports: config.ports.map(port),
            nodes: config.nodes,
            groups: (config.groups ?? []).map((g) => create(NodeGroupSchema, { name: g.name, nodes: g.nodes, resources: toProtoResources(g.resources), commands: [...g.commands], ports: g.ports.map(port) })),
          })),
        },
      });
    case "service": {
      const c = config;
      return create(ConfigurationSchema, {
        kind: {
          case: "service",
          value: create(ServiceConfigurationSchema, defined({
            base: runBase(c),
            commands: [...c.commands],
            port: port(c.port),
            gateway: c.gateway === undefined ? { case: undefined } : typeof c.gateway === "boolean" ? { case: "useGateway" as const, value: c.gateway } : { case: "gatewayRef" as const, value: entityRef(c.gateway) },
            stripPrefix: c.stripPrefix,
            model: c.model
              ? create(ServiceModelSchema, defined(c.model.format === "openai"
                  ? { type: c.model.type, name: c.model.name, format: c.model.format, prefix: c.model.prefix }
                  : { type: c.model.type, name: c.model.name, format: c.model.format, chatTemplate: c.model.chatTemplate, eosToken: c.model.eosToken }))
              : undefined,
            https: String(c.https),
            auth: c.auth,
            scaling: scaling(c.scaling),
            rateLimits: c.rateLimits.map((l) => create(RateLimitSchema, defined({ prefix: l.prefix, keyType: l.key.type, keyHeader: l.key.type === "header" ? l.key.header : undefined, rps: l.rps, burst: l.burst }))),
            probes: (c.probes ?? []).map((p) =>
              create(ProbeSchema, defined({ type: p.type, url: p.url, method: p.method, headers: p.headers.map((h) => create(HttpHeaderSchema, h)), body: p.body, timeoutSeconds: p.timeout, intervalSeconds: p.interval, readyAfter: p.readyAfter, untilReady: p.untilReady })),
            ),
            probesSet: c.probes !== undefined,
            replicas: c.replicas ? intRange(c.replicas) : undefined,
            groups: (c.groups ?? []).map((g) =>
              create(ReplicaGroupSchema, defined({
                name: g.name,
                replicas: intRange(g.replicas),
                scaling: scaling(g.scaling),
                resources: toProtoResources(g.resources),
                spotPolicy: g.spotPolicy ? toEnum(SPOT, g.spotPolicy) : 0,
                reservation: g.reservation,
                commands: [...g.commands],
                image: g.image,
                python: g.python,
                nvcc: g.nvcc,
                docker: g.docker,
                privileged: g.privileged,
                router: g.router?.type,
              })),
            ),
          })),
        },
      });
    }
    case "dev-environment":
      return create(ConfigurationSchema, {
        kind: {
          case: "devEnvironment",
          value: create(DevEnvironmentConfigurationSchema, defined({
            base: runBase(config),
            ports: config.ports.map(port),
            ide: config.ide,
            version: config.version,
            init: [...config.init],
            inactivityDuration: offDuration(config.inactivityDuration),
          })),
        },
      });
    case "fleet": {
      const f = config;
      return create(ConfigurationSchema, {
        kind: {
          case: "fleet",
          value: create(FleetConfigurationSchema, defined({
            name: f.name,
            placement: toEnum(PLACEMENT, f.placement),
            blocks: blocks(f.blocks),
            env: env(f.env),
            nodes: f.nodes ? create(FleetNodesSchema, defined({ min: f.nodes.min, target: f.nodes.target, max: f.nodes.max })) : undefined,
            sshConfig: f.sshConfig
              ? create(SshConfigSchema, defined({
                  user: f.sshConfig.user,
                  port: f.sshConfig.port,
                  identityFile: f.sshConfig.identityFile,
                  proxyJump: proxyJump(f.sshConfig.proxyJump),
                  hosts: f.sshConfig.hosts.map((h) => create(SshHostSchema, defined({ hostname: h.hostname, port: h.port, user: h.user, identityFile: h.identityFile, proxyJump: proxyJump(h.proxyJump), internalIp: h.internalIp, blocks: h.blocks === undefined ? undefined : blocks(h.blocks), sshKey: h.sshKey }))),
                  network: f.sshConfig.network,
                  sshKey: f.sshConfig.sshKey,
                }))
              : undefined,
            reservation: f.reservation,
            resources: f.resources ? toProtoResources(f.resources) : undefined,
            backends: strList(f.backends),
            regions: strList(f.regions),
            availabilityZones: strList(f.availabilityZones),
            instanceTypes: strList(f.instanceTypes),
            spotPolicy: toEnum(SPOT, f.spotPolicy),
            retry: retry(f.retry),
            maxPrice: f.maxPrice,
            idleDuration: offDuration(f.idleDuration),
            tags: tagsOut(f.tags),
            backendOptions: backendOptions(f.backendOptions),
          })),
        },
      });
    }
    case "volume": {
      const v = config;
      return create(ConfigurationSchema, {
        kind: {
          case: "volume",
          value: create(VolumeConfigurationSchema, defined({
            backend: v.backend,
            name: v.name,
            region: v.region,
            availabilityZone: v.availabilityZone,
            sizeGb: v.size,
            volumeId: v.volumeId,
            autoCleanupDuration: offDuration(v.autoCleanupDuration),
            tags: tagsOut(v.tags),
            claimName: v.claimName,
            storageClassName: v.storageClassName,
            accessModes: v.accessModes ? [...v.accessModes] : [],
            readOnly: v.readOnly,
          })),
        },
      });
    }
    case "gateway": {
      const g = config;
      return create(ConfigurationSchema, {
        kind: {
          case: "gateway",
          value: create(GatewayConfigurationSchema, defined({
            name: g.name,
            default: g.default,
            backend: g.backend,
            region: g.region,
            instanceType: g.instanceType,
            domain: g.domain,
            publicIp: g.publicIp,
            certificateType: g.certificate?.type ?? "",
            certificateArn: g.certificate?.type === "acm" ? g.certificate.arn : undefined,
            replicas: g.replicas,
            tags: tagsOut(g.tags),
          })),
        },
      });
    }
  }
}

/** The `Configuration` message → the normalized configuration. Throws if no kind is set. */
export function fromProtoConfiguration(msg: Configuration): AnyConfig {
  const k = msg.kind;
  switch (k.case) {
    case "task": {
      const t = k.value;
      const groups = t.groups.length ? t.groups.map((g) => ({ name: g.name, nodes: g.nodes, resources: fromProtoResources(g.resources), commands: [...g.commands], ports: g.ports.map(fromPort) })) : undefined;
      return defined({ type: "task" as const, ...fromRunBase(t.base), commands: [...t.commands], ports: t.ports.map(fromPort), nodes: groups ? undefined : (t.nodes ?? 1), groups });
    }
    case "service": {
      const s = k.value;
      const groups = s.groups.length
        ? s.groups.map((g) => defined({
            name: g.name,
            replicas: fromIntRange(g.replicas),
            scaling: fromScaling(g.scaling),
            resources: fromProtoResources(g.resources),
            spotPolicy: g.spotPolicy ? fromEnum(SPOT, g.spotPolicy, "on-demand") : undefined,
            reservation: g.reservation,
            commands: [...g.commands],
            image: g.image,
            python: g.python as PythonVersion | undefined,
            nvcc: g.nvcc,
            docker: g.docker,
            privileged: g.privileged,
            router: g.router ? { type: g.router as "sglang" | "dynamo" } : undefined,
          }))
        : undefined;
      const m = s.model;
      return defined({
        type: "service" as const,
        ...fromRunBase(s.base),
        commands: [...s.commands],
        port: fromPort(s.port),
        gateway: s.gateway.case === "useGateway" ? s.gateway.value : s.gateway.case === "gatewayRef" ? fromEntityRef(s.gateway.value) : undefined,
        stripPrefix: s.stripPrefix,
        model: m
          ? m.format === "tgi"
            ? defined({ type: "chat" as const, name: m.name, format: "tgi" as const, chatTemplate: m.chatTemplate, eosToken: m.eosToken })
            : { type: "chat" as const, name: m.name, format: "openai" as const, prefix: m.prefix ?? "/v1" }
          : undefined,
        https: s.https === "auto" ? ("auto" as const) : s.https !== "false",
        auth: s.auth,
        scaling: fromScaling(s.scaling),
        rateLimits: s.rateLimits.map((l) => ({ prefix: l.prefix, key: l.keyType === "header" ? { type: "header" as const, header: l.keyHeader ?? "" } : { type: "ip_address" as const }, rps: l.rps, burst: l.burst })),
        probes: s.probesSet
          ? s.probes.map((p) => defined({ type: "http" as const, url: p.url, method: p.method as "get", headers: p.headers.map((h) => ({ name: h.name, value: h.value })), body: p.body, timeout: p.timeoutSeconds, interval: p.intervalSeconds, readyAfter: p.readyAfter, untilReady: p.untilReady }))
          : undefined,
        replicas: groups ? undefined : s.replicas ? fromIntRange(s.replicas) : { min: 1, max: 1 },
        groups,
      });
    }
    case "devEnvironment": {
      const d = k.value;
      return defined({
        type: "dev-environment" as const,
        ...fromRunBase(d.base),
        ports: d.ports.map(fromPort),
        ide: d.ide as Ide | undefined,
        version: d.version,
        init: [...d.init],
        inactivityDuration: fromOffDuration(d.inactivityDuration, "off"),
      });
    }
    case "fleet": {
      const f = k.value;
      const ssh = f.sshConfig;
      const out: FleetConfig = defined({
        type: "fleet" as const,
        name: f.name,
        placement: fromEnum(PLACEMENT, f.placement, "any"),
        blocks: fromBlocks(f.blocks) ?? 1,
        env: fromEnv(f.env),
        nodes: f.nodes ? defined({ min: f.nodes.min, target: f.nodes.target, max: f.nodes.max }) : undefined,
        sshConfig: ssh
          ? defined({
              user: ssh.user,
              port: ssh.port,
              identityFile: ssh.identityFile,
              proxyJump: fromProxyJump(ssh.proxyJump),
              hosts: ssh.hosts.map((h) => defined({ hostname: h.hostname, port: h.port, user: h.user, identityFile: h.identityFile, proxyJump: fromProxyJump(h.proxyJump), internalIp: h.internalIp, blocks: fromBlocks(h.blocks), sshKey: h.sshKey })),
              network: ssh.network,
              sshKey: ssh.sshKey,
            })
          : undefined,
        reservation: f.reservation,
        resources: f.resources ? fromProtoResources(f.resources) : undefined,
        backends: fromStrList<BackendType>(f.backends),
        regions: fromStrList(f.regions),
        availabilityZones: fromStrList(f.availabilityZones),
        instanceTypes: fromStrList(f.instanceTypes),
        spotPolicy: fromEnum(SPOT, f.spotPolicy, "on-demand"),
        retry: fromRetry(f.retry),
        maxPrice: f.maxPrice,
        idleDuration: fromOffDuration(f.idleDuration, 259200),
        tags: tagsIn(f.tags),
        backendOptions: fromBackendOptions(f.backendOptions),
      });
      return out;
    }
    case "volume": {
      const v = k.value;
      const k8s = v.backend === "kubernetes";
      return defined({
        type: "volume" as const,
        backend: v.backend as VolumeBackend,
        name: v.name,
        region: v.region,
        availabilityZone: v.availabilityZone,
        size: v.sizeGb,
        volumeId: v.volumeId,
        autoCleanupDuration: fromOffDuration(v.autoCleanupDuration, "off"),
        tags: tagsIn(v.tags),
        claimName: v.claimName,
        storageClassName: v.storageClassName,
        accessModes: k8s ? [...v.accessModes] : undefined,
        readOnly: k8s ? (v.readOnly ?? false) : v.readOnly,
      });
    }
    case "gateway": {
      const g = k.value;
      return defined({
        type: "gateway" as const,
        name: g.name,
        default: g.default,
        backend: g.backend as BackendType,
        region: g.region,
        instanceType: g.instanceType,
        domain: g.domain,
        publicIp: g.publicIp,
        certificate: g.certificateType === "acm" ? { type: "acm" as const, arn: g.certificateArn ?? "" } : g.certificateType === "lets-encrypt" ? { type: "lets-encrypt" as const } : null,
        replicas: g.replicas,
        tags: tagsIn(g.tags),
      });
    }
    default:
      throw new Error("Configuration message has no kind set");
  }
}
