// The commands the dispatcher sends, built from a job's stored spec: pure functions, so what a
// shim or runner receives is decided (and tested) in one place.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { parseUnixUser } from "@dstack/proto";
import {
  RunnerRepoType,
  SubmitJobCommandSchema,
  SubmitTaskCommandSchema,
  TaskNetworkMode,
  type SubmitJobCommand,
  type SubmitTaskCommand,
} from "@dstack/proto/agent";
import type { JobAgentView } from "../services/jobs.js";
import { blockResources } from "../services/offers.js";

const GIB = 2 ** 30;
const SECRET_REF = /\$\{\{\s*secrets\.([a-zA-Z0-9_-]+)\s*\}\}/g;

/** Replaces `${{ secrets.NAME }}` with the values (every name must be present). */
export function interpolateSecrets(text: string, values: Readonly<Record<string, string>>): string {
  return text.replace(SECRET_REF, (ref, name: string) => values[name] ?? ref);
}

/**
 * Docker container name: `<job name>-<submission>-<8 hex of the submission id>`
 * (`<run>-<replica>-<job>-<submission>-…`), cut to Docker's alphabet. The id part keeps two runs
 * of one name apart on a host: a re-applied run's new container while the old one is still being
 * removed, or runs of the same name in two projects sharing an SSH host.
 */
export function containerName(v: Pick<JobAgentView, "id" | "spec" | "submissionNum">): string {
  const raw = `${v.spec.jobName}-${v.submissionNum}`.replace(/[^a-zA-Z0-9_.-]/g, "-");
  const unique = `-${v.id.replace(/-/g, "").slice(0, 8)}`;
  return (/^[a-zA-Z0-9]/.test(raw) ? raw : `j${raw}`).slice(0, 128 - unique.length) + unique;
}

/** Splits an entrypoint as a POSIX shell would split words (quotes and backslashes; no expansion). */
export function splitWords(s: string): string[] {
  const out: string[] = [];
  let cur = "";
  let has = false;
  let q: "'" | '"' | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (q === "'") {
      if (c === "'") q = null;
      else cur += c;
    } else if (q === '"') {
      if (c === '"') q = null;
      else if (c === "\\" && i + 1 < s.length && '"\\$`'.includes(s[i + 1]!)) cur += s[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      q = c;
      has = true;
    } else if (c === "\\" && i + 1 < s.length) {
      cur += s[++i];
      has = true;
    } else if (/\s/.test(c)) {
      if (has || cur) out.push(cur);
      cur = "";
      has = false;
    } else cur += c;
  }
  if (has || cur) out.push(cur);
  return out;
}

/** Whether the job holds the whole host (no limits, all GPUs). */
const wholeHost = (v: JobAgentView) => v.blocks >= v.totalBlocks;

/** GPUs of the job's blocks. */
export function gpusOf(v: JobAgentView): number {
  if (!v.host) return 0;
  return blockResources(v.host, v.totalBlocks, Math.max(1, v.blocks)).gpus.length;
}

export interface RunnerBootstrapInput {
  joinToken: string;
  agentUrl: string;
  caCertificatePem: string;
  /** The job's identity issued by the server: the runner links with it instead of enrolling. */
  certificatePem?: string;
  privateKeyPem?: string;
  notAfter?: Date;
  renewAfter?: Date;
}

/**
 * The keys `ssh <run>` may log in with: the run's `ssh_key_pub` (the CLI's key), then the
 * submitting user's keys, without repeats (same type and key data, whatever the comment).
 */
export function authorizedKeysOf(v: Pick<JobAgentView, "spec">, userKeys: readonly string[] = []): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const line of [v.spec.sshKeyPub ?? "", ...userKeys]) {
    const k = line.trim();
    const id = k.split(/\s+/).slice(0, 2).join(" ");
    if (!k || seen.has(id)) continue;
    seen.add(id);
    out.push(k);
  }
  return out;
}

/**
 * SubmitTask for the job's container. Host networking always: the runner dials the agent URL,
 * which for a server on the same machine is loopback (a bridge network would hide it).
 */
export function submitTaskCommand(
  v: JobAgentView,
  o: { runner: RunnerBootstrapInput; registryAuth?: { username: string; password: string }; /** The submitting user's SSH public keys. */ userSshKeys?: readonly string[] },
): SubmitTaskCommand {
  const s = v.spec;
  const whole = wholeHost(v);
  const part = v.host && !whole ? blockResources(v.host, v.totalBlocks, Math.max(1, v.blocks)) : null;
  const gpus = gpusOf(v);
  return create(SubmitTaskCommandSchema, {
    taskId: v.id,
    containerName: containerName(v),
    imageName: s.image,
    registryUsername: o.registryAuth?.username ?? "",
    registryPassword: o.registryAuth?.password ?? "",
    // The container runs as root so the runner can switch to the job's user (RunnerUser).
    containerUser: "",
    privileged: s.privileged,
    gpu: gpus === 0 ? 0 : whole ? -1 : gpus,
    cpu: part ? part.cpus : 0,
    memoryBytes: part ? BigInt(Math.floor(part.memoryGb * GIB)) : 0n,
    shmSizeBytes: s.resources.shmSize ? BigInt(Math.round(s.resources.shmSize * GIB)) : 0n,
    networkMode: TaskNetworkMode.HOST,
    ports: s.ports,
    instanceMounts: s.instanceMounts.map((m) => ({ instancePath: m.instancePath, path: m.path })),
    containerSshKeys: authorizedKeysOf(v, o.userSshKeys),
    runner: {
      joinToken: o.runner.joinToken,
      agentUrl: o.runner.agentUrl,
      caCertificatePem: o.runner.caCertificatePem,
      certificatePem: o.runner.certificatePem ?? "",
      privateKeyPem: o.runner.privateKeyPem ?? "",
      ...(o.runner.notAfter ? { notAfter: timestampFromDate(o.runner.notAfter) } : {}),
      ...(o.runner.renewAfter ? { renewAfter: timestampFromDate(o.runner.renewAfter) } : {}),
    },
  });
}

const REPO_TYPES = { remote: RunnerRepoType.REMOTE, local: RunnerRepoType.LOCAL, virtual: RunnerRepoType.VIRTUAL } as const;

/** SubmitJob for the runner: `env` already has secrets interpolated; `secrets` are the referenced ones. */
export function submitJobCommand(
  v: JobAgentView,
  o: { env: Record<string, string>; secrets: Record<string, string>; userSshKeys?: readonly string[]; inlineBlobs?: Readonly<Record<string, Uint8Array>> },
): SubmitJobCommand {
  const s = v.spec;
  const user = s.user ? parseUnixUser(s.user) : null;
  const blob = (hash: string) => ({ sha256: hash, sizeBytes: BigInt(v.blobSizes[hash] ?? 0), ...(o.inlineBlobs?.[hash] ? { inline: o.inlineBlobs[hash] } : {}) });
  const gpusPerJob = gpusOf(v);
  const nodes = Math.max(1, s.jobsPerReplica);
  const repo = s.repo ?? { type: "virtual", ifExists: "error" };
  return create(SubmitJobCommandSchema, {
    jobSubmissionId: v.id,
    runId: v.runId,
    runName: v.runName,
    repoId: s.repoId ?? "",
    ...(user ? { user: { ...user } } : {}),
    commands: s.commands,
    entrypoint: s.entrypoint ? splitWords(s.entrypoint) : [],
    shell: s.shell ?? "/bin/sh",
    env: o.env,
    secrets: o.secrets,
    workingDir: s.workingDir ?? "",
    repo: {
      type: REPO_TYPES[repo.type],
      cloneUrl: repo.url ?? "",
      branch: repo.branch ?? "",
      hash: repo.hash ?? "",
      configName: repo.configName ?? "",
      configEmail: repo.configEmail ?? "",
      repoDir: repo.dir ?? "",
      skipIfExists: repo.ifExists === "skip",
      singleBranch: s.singleBranch ?? true,
    },
    ...(s.repoCodeHash ? { code: blob(s.repoCodeHash) } : {}),
    fileArchives: (s.fileArchives ?? []).map((f) => ({ archive: blob(f.hash), path: f.path })),
    clusterInfo: {
      jobIps: v.nodeIps,
      masterJobIp: v.nodeIps[0] ?? "",
      gpusPerJob,
      nodeRank: v.jobNum,
      nodesNum: nodes,
      gpusNum: gpusPerJob * nodes,
    },
    ...(s.maxDuration !== null ? { maxDuration: { seconds: BigInt(s.maxDuration) } } : {}),
    authorizedKeys: authorizedKeysOf(v, o.userSshKeys),
    // A dev environment is where a person attaches: its commands get a terminal.
    tty: s.runType === "dev-environment",
    python: s.python ?? "",
  });
}
