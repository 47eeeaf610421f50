import { describe, expect, it } from "vitest";
import { composeEnv, DEFAULT_PATH } from "./env.js";

const base = {
  runId: "run-1",
  runName: "my-run",
  repoId: "repo-1",
  jobSubmissionId: "sub-1",
  workingDir: "/workflow",
  repoDir: "/workflow",
  home: "/root",
  username: "root",
  secrets: {},
  env: {},
};

describe("job environment", () => {
  it("layers container env < DSTACK_* < secrets < job env", () => {
    const env = composeEnv({
      ...base,
      container: { PATH: "/opt/bin:/usr/bin", LANG: "C.UTF-8", DSTACK_RUN_NAME: "from-image", SHARED: "container", HF_TOKEN: "image" },
      secrets: { HF_TOKEN: "secret", SHARED: "secret" },
      env: { SHARED: "job", DSTACK_NODE_RANK: "7" },
    });
    expect(env.PATH).toBe("/opt/bin:/usr/bin");
    expect(env.LANG).toBe("C.UTF-8");
    expect(env.DSTACK_RUN_NAME).toBe("my-run");
    expect(env.HF_TOKEN).toBe("secret");
    expect(env.SHARED).toBe("job");
    expect(env.DSTACK_NODE_RANK).toBe("7");
  });

  it("sets every DSTACK_* variable dstack's runner sets, single node by default", () => {
    const env = composeEnv({ ...base, container: {} });
    expect(env).toMatchObject({
      DSTACK_RUN_ID: "run-1",
      DSTACK_RUN_NAME: "my-run",
      DSTACK_REPO_ID: "repo-1",
      DSTACK_JOB_ID: "sub-1",
      DSTACK_WORKING_DIR: "/workflow",
      DSTACK_REPO_DIR: "/workflow",
      DSTACK_NODE_RANK: "0",
      DSTACK_NODES_NUM: "1",
      DSTACK_MASTER_NODE_IP: "127.0.0.1",
      DSTACK_NODES_IPS: "127.0.0.1",
      DSTACK_GPUS_PER_NODE: "0",
      DSTACK_GPUS_NUM: "0",
      HOME: "/root",
      PATH: DEFAULT_PATH,
    });
  });

  it("describes the cluster of a multi-node job", () => {
    const env = composeEnv({
      ...base,
      container: {},
      cluster: { jobIps: ["10.0.0.1", "10.0.0.2"], masterJobIp: "10.0.0.1", gpusPerJob: 8, nodeRank: 1, nodesNum: 2, gpusNum: 16 },
      mpiHostfile: "/dstack/mpi/hostfile",
    });
    expect(env.DSTACK_NODES_IPS).toBe("10.0.0.1\n10.0.0.2");
    expect(env.DSTACK_MASTER_NODE_IP).toBe("10.0.0.1");
    expect(env.DSTACK_NODE_RANK).toBe("1");
    expect(env.DSTACK_NODES_NUM).toBe("2");
    expect(env.DSTACK_GPUS_PER_NODE).toBe("8");
    expect(env.DSTACK_GPUS_NUM).toBe("16");
    expect(env.DSTACK_MPI_HOSTFILE).toBe("/dstack/mpi/hostfile");
  });

  it("does not pass the runner's own settings or the bundle's loader paths to the job", () => {
    const env = composeEnv({ ...base, container: { DSTACK_RUNNER_JOIN_TOKEN: "t", DSTACK_RUNNER_AGENT_URL: "u", LD_LIBRARY_PATH: "/dstack/runner/lib", NODE_OPTIONS: "--x", KEEP: "1" } });
    expect(Object.keys(env).filter((k) => k.startsWith("DSTACK_RUNNER_") || k === "LD_LIBRARY_PATH" || k === "NODE_OPTIONS")).toEqual([]);
    expect(env.KEEP).toBe("1");
  });
});
