// The job's environment, layered as dstack's runner does (executor.go::execJob):
// container env < DSTACK_* < secrets < job env. The runner's own settings are never passed on.

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Variables that configure the runner itself (and the bundle's loader) rather than the job. */
const RUNNER_ONLY = /^(DSTACK_RUNNER_|NODE_OPTIONS$|NODE_PATH$|LD_LIBRARY_PATH$)/;

export interface ClusterFacts {
  jobIps: readonly string[];
  masterJobIp: string;
  gpusPerJob: number;
  nodeRank: number;
  nodesNum: number;
  gpusNum: number;
}

export interface JobEnvInput {
  /** The container's environment, i.e. the runner's own process.env. */
  container: Record<string, string | undefined>;
  runId: string;
  runName: string;
  repoId: string;
  jobSubmissionId: string;
  workingDir: string;
  repoDir: string;
  home: string;
  username: string;
  cluster?: ClusterFacts;
  mpiHostfile?: string;
  secrets: Record<string, string>;
  env: Record<string, string>;
}

/** Single node: this container is the whole cluster, and its master is itself. */
export const SINGLE_NODE: ClusterFacts = { jobIps: ["127.0.0.1"], masterJobIp: "127.0.0.1", gpusPerJob: 0, nodeRank: 0, nodesNum: 1, gpusNum: 0 };

export function dstackVariables(i: Omit<JobEnvInput, "container" | "secrets" | "env">): Record<string, string> {
  const c = i.cluster ?? SINGLE_NODE;
  const ips = c.jobIps.length > 0 ? c.jobIps : [c.masterJobIp || "127.0.0.1"];
  const vars: Record<string, string> = {
    DSTACK_RUN_ID: i.runId,
    DSTACK_RUN_NAME: i.runName,
    DSTACK_REPO_ID: i.repoId,
    DSTACK_JOB_ID: i.jobSubmissionId,
    DSTACK_WORKING_DIR: i.workingDir,
    DSTACK_REPO_DIR: i.repoDir,
    DSTACK_NODE_RANK: String(c.nodeRank),
    DSTACK_NODES_NUM: String(c.nodesNum || ips.length),
    DSTACK_MASTER_NODE_IP: c.masterJobIp || ips[0]!,
    DSTACK_NODES_IPS: ips.join("\n"),
    DSTACK_GPUS_PER_NODE: String(c.gpusPerJob),
    DSTACK_GPUS_NUM: String(c.gpusNum || c.gpusPerJob * (c.nodesNum || ips.length)),
    HOME: i.home,
    USER: i.username,
    LOGNAME: i.username,
  };
  if (i.mpiHostfile) vars.DSTACK_MPI_HOSTFILE = i.mpiHostfile;
  return vars;
}

/** The full environment of the job's process. */
export function composeEnv(i: JobEnvInput): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(i.container)) {
    if (v === undefined || RUNNER_ONLY.test(k)) continue;
    out[k] = v;
  }
  out.PATH ||= DEFAULT_PATH;
  Object.assign(out, dstackVariables(i), i.secrets, i.env);
  return out;
}
