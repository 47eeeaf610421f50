// RunService → services.runs / services.code. Proto ↔ view mapping only; the shared mappers
// (run, offer) are exported for the other handler modules of this domain.
import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { SERVICE_PROXY_PREFIX } from "./service-proxy.js";
import { fromProtoConfiguration, toProtoConfiguration, toProtoResources, type RunConfig } from "@dstack/proto";
import {
  AcceleratorVendor,
  ApplyAction,
  Availability,
  BackendType,
  CpuArch,
  JobPlanSchema,
  JobProvisioningDataSchema,
  JobRequirementsSchema,
  JobRuntimeDataSchema,
  JobSchema,
  JobSpecSchema,
  JobSubmissionSchema,
  OfferSchema,
  ResourcesSchema,
  RunPlanSchema,
  RunSchema,
  RunSpecSchema,
  ServiceInfoSchema,
  RepoExistsAction,
  RepoType,
  type Offer,
  type RepoInfo,
  type Run,
  type RunService,
  type RunSpec,
} from "@dstack/proto/api";
import { err } from "../errors.js";
import type { HostInfo, InstanceResources, OfferView } from "../services/offers.js";
import type { JobSubmissionView, RunSpecInput, RunView, StoredJobSpec } from "../services/runs.js";
import { publicUrl } from "../settings.js";
import { caller } from "./context.js";
import type { HandlerDeps } from "./deps.js";

const ts = (d: Date | null | undefined) => (d ? timestampFromDate(d) : undefined);
const dur = (s: number | null) => (s === null ? undefined : create(DurationSchema, { seconds: BigInt(Math.round(s)) }));
const MIB = 1024;

export function backendEnum(name: string): BackendType {
  return (BackendType as unknown as Record<string, BackendType>)[name.toUpperCase()] ?? BackendType.REMOTE;
}

/** Concrete resources (a host, or the share of it some blocks are) as the Resources message. */
export function resourcesMessage(r: InstanceResources | HostInfo) {
  return create(ResourcesSchema, {
    cpus: r.cpus,
    cpuArch: r.cpuArch === "arm" ? CpuArch.ARM : CpuArch.X86,
    memoryMib: BigInt(Math.round(r.memoryGb * MIB)),
    diskMib: BigInt(Math.round(r.diskGb * MIB)),
    gpus: r.gpus.map((g) => ({
      name: g.name,
      memoryMib: BigInt(Math.round(g.memoryGb * MIB)),
      vendor: (AcceleratorVendor as unknown as Record<string, AcceleratorVendor>)[String(g.vendor ?? "nvidia").toUpperCase()] ?? AcceleratorVendor.NVIDIA,
    })),
  });
}

export function offerMessage(o: OfferView): Offer {
  return create(OfferSchema, {
    backend: backendEnum(o.backend),
    region: o.region,
    instance: { name: o.instanceName, resources: resourcesMessage(o.resources) },
    price: o.price,
    availability: o.availability === "busy" ? Availability.BUSY : o.availability === "idle" ? Availability.IDLE : Availability.AVAILABLE,
    blocks: o.blocks,
    totalBlocks: o.totalBlocks,
    fleetName: o.fleetName,
    instanceName: o.instanceName,
  });
}

const REPO_TYPES = { [RepoType.REMOTE]: "remote", [RepoType.LOCAL]: "local", [RepoType.VIRTUAL]: "virtual" } as const;

function repoInfo(r: RepoInfo) {
  return {
    type: REPO_TYPES[r.repoType as keyof typeof REPO_TYPES] ?? "virtual",
    ...(r.repoUrl ? { url: r.repoUrl } : {}),
    ...(r.branch ? { branch: r.branch } : {}),
    ...(r.hash ? { hash: r.hash } : {}),
    ...(r.configName ? { configName: r.configName } : {}),
    ...(r.configEmail ? { configEmail: r.configEmail } : {}),
    ...(r.repoDir ? { dir: r.repoDir } : {}),
    ifExists: r.ifExists === RepoExistsAction.SKIP ? "skip" : "error",
  };
}

/** RunSpec message → service input; the configuration must be a run configuration. */
export function runSpecInput(spec: RunSpec | undefined): RunSpecInput {
  if (!spec?.configuration) throw err("DSTACK_INVALID_RUN_SPEC", { reason: "run_spec.configuration is required" });
  const configuration = fromProtoConfiguration(spec.configuration);
  if (!["task", "service", "dev-environment"].includes(configuration.type)) {
    throw err("DSTACK_INVALID_RUN_SPEC", { reason: `a ${configuration.type} configuration is not a run; apply it as a ${configuration.type}` });
  }
  return {
    ...(spec.runName ? { runName: spec.runName } : {}),
    configuration: configuration as RunConfig,
    ...(spec.configurationPath ? { configurationPath: spec.configurationPath } : {}),
    ...(spec.repo?.repoId ? { repoId: spec.repo.repoId } : {}),
    ...(spec.repoCodeHash ? { repoCodeHash: spec.repoCodeHash } : {}),
    env: { ...spec.env },
    runArgs: [...spec.runArgs],
    extra: {
      workingDir: spec.workingDir,
      sshKeyPub: spec.sshKeyPub,
      profileName: spec.profileName,
      // What the runner needs to prepare the repo and the `files:` archives (StoredJobSpec.repo/fileArchives).
      ...(spec.repo && spec.repo.repoType !== RepoType.UNSPECIFIED ? { repo: repoInfo(spec.repo) } : {}),
      ...(spec.fileArchives.length ? { fileArchives: spec.fileArchives.map((f) => ({ archiveHash: f.archiveHash, path: f.path })) } : {}),
    },
  };
}

function runSpecMessage(s: RunSpecInput & { runName: string }) {
  return create(RunSpecSchema, {
    runName: s.runName,
    configuration: toProtoConfiguration(s.configuration),
    configurationPath: s.configurationPath ?? "",
    repoCodeHash: s.repoCodeHash ?? "",
    env: s.env ?? {},
    runArgs: s.runArgs ?? [],
    workingDir: String(s.extra?.workingDir ?? ""),
    sshKeyPub: String(s.extra?.sshKeyPub ?? ""),
    profileName: String(s.extra?.profileName ?? ""),
    fileArchives: (Array.isArray(s.extra?.fileArchives) ? (s.extra.fileArchives as { archiveHash: string; path: string }[]) : []).map((f) => ({ archiveHash: f.archiveHash, path: f.path })),
  });
}

function jobSpecMessage(j: StoredJobSpec) {
  return create(JobSpecSchema, {
    replicaNum: j.replicaNum,
    jobNum: j.jobNum,
    jobName: j.jobName,
    jobsPerReplica: j.jobsPerReplica,
    imageName: j.image ?? "",
    commands: j.commands,
    maxDuration: dur(j.maxDuration),
    stopDuration: dur(j.stopDuration),
    requirements: create(JobRequirementsSchema, { resources: toProtoResources(j.resources), ...(j.maxPrice !== undefined ? { maxPrice: j.maxPrice } : {}) }),
  });
}

/** The job's share of the host as placement recorded it (`resources`); none for older rows. */
function placedResources(pd: Record<string, unknown>) {
  const r = pd.resources as InstanceResources | undefined;
  return r && typeof r.cpus === "number" && Array.isArray(r.gpus) ? resourcesMessage(r) : undefined;
}

function submissionMessage(s: JobSubmissionView) {
  const pd = s.provisioningData as Record<string, string | number> | null;
  return create(JobSubmissionSchema, {
    id: s.id,
    submissionNum: s.submissionNum,
    deploymentNum: s.deploymentNum,
    submittedAt: ts(s.submittedAt),
    lastProcessedAt: ts(s.lastProcessedAt),
    finishedAt: ts(s.finishedAt),
    status: s.status,
    statusMessage: s.statusMessage,
    terminationReason: s.terminationReason ?? 0,
    terminationReasonMessage: s.terminationReasonMessage ?? "",
    ...(s.exitStatus !== null ? { exitStatus: s.exitStatus } : {}),
    jobProvisioningData: pd
      ? create(JobProvisioningDataSchema, {
          backend: backendEnum(String(pd.backend ?? "remote")),
          instanceType: { name: "", resources: placedResources(pd) },
          instanceId: String(pd.instanceId ?? ""),
          instanceName: String(pd.instanceName ?? ""),
          fleetName: String(pd.fleetName ?? ""),
          hostname: String(pd.hostname ?? ""),
          internalIp: String(pd.internalIp ?? ""),
          region: String(pd.region ?? ""),
          price: Number(pd.price ?? 0),
          dockerized: true,
        })
      : undefined,
    jobRuntimeData: s.blocks ? create(JobRuntimeDataSchema, { blocks: s.blocks }) : undefined,
  });
}

/** Where a service answers: the in-server proxy under the server's URL (no gateways here yet). */
function serviceInfo(r: RunView, serverUrl: string | undefined) {
  if (!serverUrl || r.runSpec.configuration?.type !== "service") return undefined;
  return create(ServiceInfoSchema, { url: `${serverUrl.replace(/\/$/, "")}${SERVICE_PROXY_PREFIX}/${encodeURIComponent(r.projectName)}/${encodeURIComponent(r.runSpec.runName)}/` });
}

export function toRunMessage(r: RunView, serverUrl?: string): Run {
  const fleet = r.latestJobSubmission?.provisioningData?.fleetName;
  return create(RunSchema, {
    id: r.id,
    projectName: r.projectName,
    user: r.user,
    submittedAt: ts(r.submittedAt),
    lastProcessedAt: ts(r.lastProcessedAt),
    status: r.status,
    statusMessage: r.statusMessage,
    terminationReason: r.terminationReason ?? 0,
    runSpec: runSpecMessage(r.runSpec),
    jobs: r.jobs.map((j) => create(JobSchema, { jobSpec: jobSpecMessage(j.spec), jobSubmissions: j.submissions.map(submissionMessage) })),
    latestJobSubmission: r.latestJobSubmission ? submissionMessage(r.latestJobSubmission) : undefined,
    deleted: r.deleted,
    priority: r.priority,
    deploymentNum: r.deploymentNum,
    fleetName: typeof fleet === "string" ? fleet : "",
    service: serviceInfo(r, serverUrl),
  });
}

const ACTIONS = { create: ApplyAction.CREATE, recreate: ApplyAction.RECREATE, update: ApplyAction.UPDATE, blocked: ApplyAction.NONE } as const;

export function runHandlers({ services, settings }: HandlerDeps): Partial<ServiceImpl<typeof RunService>> {
  const { runs, code } = services;
  const serverUrl = publicUrl(settings.host, settings.port);
  const runMessage = (r: RunView) => toRunMessage(r, serverUrl);
  return {
    getRunPlan: async (req, ctx) => {
      const plan = await runs.plan(caller(ctx), req.projectName, runSpecInput(req.runSpec), { maxOffers: req.maxOffers, includeBusy: true });
      return {
        plan: create(RunPlanSchema, {
          projectName: plan.projectName,
          user: plan.user,
          runSpec: req.runSpec,
          effectiveRunSpec: runSpecMessage(plan.runSpec),
          jobPlans: plan.jobPlans.map((p) => create(JobPlanSchema, { jobSpec: jobSpecMessage(p.spec), offers: p.offers.map(offerMessage), totalOffers: p.totalOffers, maxPrice: Math.max(0, ...p.offers.map((o) => o.price)) })),
          currentResource: plan.currentResource ? runMessage(plan.currentResource) : undefined,
          action: ACTIONS[plan.action],
          changedFields: plan.changedFields,
        }),
      };
    },
    applyRun: async (req, ctx) => ({
      run: runMessage(await runs.apply(caller(ctx), req.projectName, runSpecInput(req.runSpec), { currentResourceId: req.currentResourceId, force: req.force })),
    }),
    listRuns: async (req, ctx) => {
      const page = await runs.list(caller(ctx), {
        projectName: req.projectName || undefined,
        username: req.username || undefined,
        repoId: req.repoId || undefined,
        onlyActive: req.onlyActive,
        includeJobs: req.includeJobs,
        limit: req.limit,
        pageToken: req.pageToken,
      });
      return { runs: page.runs.map(runMessage), nextPageToken: page.nextPageToken };
    },
    getRun: async (req, ctx) => ({
      run: runMessage(await runs.get(caller(ctx), req.projectName, req.run.case === "id" ? { id: req.run.value } : { runName: req.run.value ?? "" })),
    }),
    stopRuns: async (req, ctx) => {
      await runs.stop(caller(ctx), req.projectName, req.runNames, req.abort);
      return {};
    },
    deleteRuns: async (req, ctx) => {
      await runs.delete(caller(ctx), req.projectName, req.runNames);
      return {};
    },
    async *watchRuns(req, ctx) {
      for await (const u of runs.watch(caller(ctx), { projectName: req.projectName || undefined, runNames: req.runNames, onlyActive: req.onlyActive, includeJobs: req.includeJobs }, ctx.signal)) {
        yield { run: u.run ? runMessage(u.run) : undefined, initialStateSent: u.initialStateSent, changedAt: ts(u.changedAt) };
      }
    },
    uploadCode: async (req, ctx) => code.upload(caller(ctx), req.projectName, req.codeHash, req.blob),
    uploadFileArchive: async (req, ctx) => code.uploadFileArchive(caller(ctx), req.projectName, req.archiveHash, req.blob),
    getFileArchive: async (req, ctx) => {
      const size = await code.blobSize(caller(ctx), req.projectName, req.archiveHash);
      return { exists: size !== null, sizeBytes: BigInt(size ?? 0) };
    },
  };
}

export { timestampDate };
