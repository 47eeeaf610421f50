import { create } from "@bufbuild/protobuf";
import { parseConfiguration, type RunConfig } from "@dstack/proto";
import { GpuVendor, HostInfoSchema, RunnerRepoType, TaskNetworkMode } from "@dstack/proto/agent";
import { describe, expect, it } from "vitest";
import { JobStatus } from "../domain/enums.js";
import type { JobAgentView } from "../services/jobs.js";
import type { HostInfo } from "../services/offers.js";
import { buildJobSpecs, DEFAULT_DEVEL_IMAGE, DEFAULT_IMAGE, DIND_IMAGE } from "../services/runs.js";
import { containerName, interpolateSecrets, splitWords, submitJobCommand, submitTaskCommand } from "./commands.js";
import { describeHost, toHostInfo } from "./host-info.js";

const cfg = (yaml: string) => parseConfiguration(`type: task\n${yaml}`, ".dstack.yml") as RunConfig;
const GIB = 2 ** 30;
const gpuHost: HostInfo = { cpus: 32, memoryGb: 256, diskGb: 1000, gpus: Array.from({ length: 4 }, () => ({ vendor: "nvidia" as const, name: "A100", memoryGb: 80 })), internalIp: "10.1.0.7" };

function view(yaml: string, o: Partial<JobAgentView> = {}, spec: Parameters<typeof buildJobSpecs>[2] = {}): JobAgentView {
  const s = buildJobSpecs("train", cfg(yaml), spec)[0]!;
  return {
    id: "00000000-0000-4000-8000-000000000001",
    status: JobStatus.PROVISIONING,
    terminationReason: null,
    terminationReasonMessage: null,
    removeAt: null,
    submissionNum: 2,
    jobNum: 0,
    replicaNum: 0,
    spec: s,
    runId: "run-id",
    runName: "train",
    projectId: "p",
    userId: "u",
    instanceId: "i",
    fleetId: "f",
    blocks: 4,
    totalBlocks: 4,
    host: gpuHost,
    nodeIps: ["10.1.0.7"],
    siblingIds: [],
    blobSizes: {},
    ...o,
  };
}

const runner = { joinToken: "dsj.x.y", agentUrl: "https://127.0.0.1:3001", caCertificatePem: "PEM" };

describe("stored job specs", () => {
  it("default image, shell and working dir for dstack's image; the configuration's otherwise", () => {
    const d = buildJobSpecs("r", cfg("commands: [echo]\n"))[0]!;
    expect([d.image, d.shell, d.workingDir]).toEqual([DEFAULT_IMAGE, "/bin/bash", "/dstack/run"]);
    expect(buildJobSpecs("r", cfg("commands: [echo]\nnvcc: true\n"))[0]!.image).toBe(DEFAULT_DEVEL_IMAGE);
    const dind = buildJobSpecs("r", cfg("commands: [echo]\ndocker: true\n"))[0]!;
    expect([dind.image, dind.privileged]).toEqual([DIND_IMAGE, true]);
    const c = buildJobSpecs("r", cfg("image: ubuntu\ncommands: [echo]\nshell: sh\n"))[0]!;
    expect([c.image, c.shell, c.workingDir]).toEqual(["ubuntu", "/bin/sh", ""]);
  });

  it("env is the configuration's with -e on top; secret references stay references and are listed", () => {
    const s = buildJobSpecs("r", cfg("commands: [echo]\nenv:\n  - A=1\n  - B=x${{ secrets.TOKEN }}y\nregistry_auth: {username: u, password: '${{ secrets.REG }}'}\n"), { env: { A: "2", C: "3" } })[0]!;
    expect(s.env).toEqual({ A: "2", B: "x${{ secrets.TOKEN }}y", C: "3" });
    expect(s.secretNames.sort()).toEqual(["REG", "TOKEN"]);
    expect(s.registryAuth).toEqual({ username: "u", password: "${{ secrets.REG }}" });
  });

  it("keeps ports, mounts, user, entrypoint, code and repo; expands ${{ run.args }}", () => {
    const s = buildJobSpecs("r", cfg("image: x\nentrypoint: python -u\ncommands: ['train.py ${{ run.args }}']\nports: [8000, '9000:9001']\nuser: 1000:100\nvolumes: ['/data:/data']\n"), {
      repoId: "rid",
      repoCodeHash: "ABC",
      runArgs: ["--lr", "1 e-3"],
    })[0]!;
    expect(s.commands).toEqual(["train.py --lr '1 e-3'"]);
    expect([s.entrypoint, s.user, s.ports, s.repoId, s.repoCodeHash]).toEqual(["python -u", "1000:100", [8000, 9001], "rid", "abc"]);
    expect(s.instanceMounts).toEqual([{ instancePath: "/data", path: "/data", optional: false }]);
    expect(s.repo).toEqual({ type: "local", dir: "", ifExists: "error" });
  });
});

describe("agent commands", () => {
  it("SubmitTask takes the whole host with host networking, or its blocks' share with limits", () => {
    const whole = submitTaskCommand(view("image: img\ncommands: [echo]\nresources: {shm_size: 2GB}\n"), { runner });
    expect([whole.containerName, whole.imageName, whole.gpu, whole.cpu, whole.memoryBytes, whole.shmSizeBytes, whole.networkMode]).toEqual(["train-0-0-2-00000000", "img", -1, 0, 0n, BigInt(2 * GIB), TaskNetworkMode.HOST]);
    expect(whole.runner).toMatchObject(runner);
    const part = submitTaskCommand(view("commands: [echo]\n", { blocks: 1 }), { runner, registryAuth: { username: "u", password: "p" } });
    expect([part.gpu, part.cpu, part.memoryBytes, part.registryUsername, part.registryPassword]).toEqual([1, 8, BigInt(64 * GIB), "u", "p"]);
    const cpuOnly = submitTaskCommand(view("commands: [echo]\n", { host: { cpus: 8, memoryGb: 32, diskGb: 100, gpus: [] } }), { runner });
    expect(cpuOnly.gpu).toBe(0);
  });

  it("SubmitJob carries the job's commands, env, user, code, repo and cluster facts", () => {
    const v = view("image: img\nentrypoint: \"python -c 'print(1)'\"\ncommands: [a, b]\nuser: alice:staff\nmax_duration: 1h\nworking_dir: /w\n", { blobSizes: { abc: 42 } }, { repoCodeHash: "abc", repoId: "rid" });
    const j = submitJobCommand(v, { env: { A: "1" }, secrets: { S: "v" } });
    expect([j.jobSubmissionId, j.runId, j.runName, j.repoId, j.workingDir, j.shell]).toEqual([v.id, "run-id", "train", "rid", "/w", "/bin/sh"]);
    expect([j.commands, j.entrypoint, j.env, j.secrets]).toEqual([["a", "b"], ["python", "-c", "print(1)"], { A: "1" }, { S: "v" }]);
    expect(j.user).toMatchObject({ username: "alice", groupname: "staff" });
    expect(j.code).toMatchObject({ sha256: "abc", sizeBytes: 42n });
    expect(j.repo?.type).toBe(RunnerRepoType.LOCAL);
    expect(j.maxDuration?.seconds).toBe(3600n);
    expect(j.clusterInfo).toMatchObject({ jobIps: ["10.1.0.7"], masterJobIp: "10.1.0.7", gpusPerJob: 4, nodeRank: 0, nodesNum: 1, gpusNum: 4 });
  });

  it("SubmitJob carries a small blob inline when the dispatcher read it, else only its reference", () => {
    const v = view("image: img\ncommands: [a]\n", { blobSizes: { abc: 3 } }, { repoCodeHash: "abc" });
    const inline = submitJobCommand(v, { env: {}, secrets: {}, inlineBlobs: { abc: new Uint8Array([1, 2, 3]) } });
    expect(inline.code).toMatchObject({ sha256: "abc", sizeBytes: 3n, inline: new Uint8Array([1, 2, 3]) });
    const referenced = submitJobCommand(v, { env: {}, secrets: {} });
    expect(referenced.code).toMatchObject({ sha256: "abc", sizeBytes: 3n });
    expect(referenced.code?.inline.length).toBe(0);
  });

  it("SubmitJob asks for a terminal for dev environments only (where a person attaches)", () => {
    const dev = buildJobSpecs("dev", parseConfiguration("type: dev-environment\nide: vscode\n", ".dstack.yml") as RunConfig, {})[0]!;
    expect(submitJobCommand({ ...view("image: img\n"), spec: dev }, { env: {}, secrets: {} }).tty).toBe(true);
    expect(submitJobCommand(view("image: img\ncommands: [a]\n"), { env: {}, secrets: {} }).tty).toBe(false);
  });

  it("SubmitJob carries the configuration's python version", () => {
    expect(submitJobCommand(view("python: 3.11\ncommands: [a]\n"), { env: {}, secrets: {} }).python).toBe("3.11");
    expect(submitJobCommand(view("image: img\ncommands: [a]\n"), { env: {}, secrets: {} }).python).toBe("");
  });

  it("the container accepts the run's ssh_key_pub and the submitting user's keys, each once", () => {
    const cli = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIcli dstack";
    const mine = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABmine me@laptop";
    const v = view("commands: [echo]\n", {}, { extra: { sshKeyPub: cli } });
    const t = submitTaskCommand(v, { runner, userSshKeys: [mine, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIcli other-comment", " "] });
    expect([t.containerSshKeys, t.hostSshKeys]).toEqual([[cli, mine], []]);
    expect(submitJobCommand(v, { env: {}, secrets: {}, userSshKeys: [mine] }).authorizedKeys).toEqual([cli, mine]);
    expect(submitTaskCommand(view("commands: [echo]\n"), { runner }).containerSshKeys).toEqual([]);
  });

  it("names containers within Docker's alphabet", () => {
    const id = "5f0c2a9e-1b7d-4c3e-9a21-0d4e6f8a1b2c";
    expect(containerName({ id, spec: { jobName: "my run/1" } as JobAgentView["spec"], submissionNum: 0 })).toBe("my-run-1-0-5f0c2a9e");
    expect(containerName({ id, spec: { jobName: "-x" } as JobAgentView["spec"], submissionNum: 3 })).toBe("j-x-3-5f0c2a9e");
    // Two submissions of one name (a re-applied run, or the same name in another project) differ.
    expect(containerName({ id: "0b1e7c44-0000-4000-8000-000000000000", spec: { jobName: "my run/1" } as JobAgentView["spec"], submissionNum: 0 })).not.toBe("my-run-1-0-5f0c2a9e");
    // Docker's 128 characters hold the id part even for the longest names.
    const long = containerName({ id, spec: { jobName: "n".repeat(200) } as JobAgentView["spec"], submissionNum: 0 });
    expect([long.length, long.endsWith("-5f0c2a9e")]).toEqual([128, true]);
  });

  it("splits entrypoints like a shell and interpolates secrets", () => {
    expect(splitWords(`bash -c "echo \\"hi\\" 'there'" a\\ b ''`)).toEqual(["bash", "-c", `echo "hi" 'there'`, "a b", ""]);
    expect(interpolateSecrets("a=${{ secrets.X }}, b=${{secrets.Y}}", { X: "1", Y: "2" })).toBe("a=1, b=2");
  });
});

describe("host facts", () => {
  it("converts a shim's report into what offers match on", () => {
    const h = toHostInfo(
      create(HostInfoSchema, {
        hostname: "gpu-1",
        arch: "arm64",
        cpus: 64,
        memoryBytes: BigInt(512 * GIB),
        diskTotalBytes: BigInt(2000 * GIB),
        addresses: [{ ip: "fe80::1" }, { ip: "192.168.1.9", private: true }],
        gpus: [{ vendor: GpuVendor.NVIDIA, name: "NVIDIA H100 80GB HBM3", shortName: "H100", memoryBytes: 81559n * 2n ** 20n }],
      }),
    )!;
    expect(h).toEqual({ cpus: 64, cpuArch: "arm", memoryGb: 512, diskGb: 2000, gpus: [{ vendor: "nvidia", name: "H100", memoryGb: 80 }], hostname: "gpu-1", internalIp: "192.168.1.9" });
    expect(describeHost(h)).toBe("64 CPUs, 512 GB memory, GPUs: 1x H100 (80 GB)");
    expect(toHostInfo(create(HostInfoSchema, { hostname: "booting" }))).toBeNull();
  });
});
