// dstack-runner inside real containers: the portable bundle mounted read-only into images with
// no Node (busybox: static, no libc, no /etc/passwd, no bash; glibc: bash, no Node), dialing a
// real mesh server over the docker bridge, running jobs end to end.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { JobState, RunnerRepoType, SubmitJobCommandSchema } from "@dstack/proto/agent";
import { JobTerminationReason } from "@dstack/proto/api";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type Dockerode from "dockerode";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { buildRunnerBundle } from "../../scripts/build-runner-bundle.js";
import { demux, docker, requireTestImages, runContainer, TEST_CONTAINER_LABEL, TEST_IMAGES } from "../helpers/docker.js";
import { makeTestRepo, startGitHttp, type GitHttpServer, type TestRepo } from "./git-http.js";
import { startGitSshd, type GitSshd } from "./git-ssh.js";
import { startRunnerMesh, stateNames, type RunnerMesh } from "./harness.js";

const MOUNT = "/dstack/runner";
const RUNNER_ARGV = [`${MOUNT}/lib/ld-linux-x86-64.so.2`, "--library-path", `${MOUNT}/lib`, `${MOUNT}/bin/node`, `${MOUNT}/runner.js`];

let bundle: string;
let m: RunnerMesh;
let gateway: string;

beforeAll(async () => {
  await requireTestImages();
  bundle = (await buildRunnerBundle({ log: () => {} })).dir;
  m = await startRunnerMesh();
  const net = (await docker().getNetwork("bridge").inspect()) as { IPAM: { Config: { Gateway?: string }[] } };
  gateway = net.IPAM.Config.find((c) => c.Gateway)?.Gateway ?? "172.17.0.1";
});
afterAll(() => m?.cleanup());
beforeEach(() => requireTestImages());

interface Started {
  container: Dockerode.Container;
  jobId: string;
  /** Resolves with the container's exit code and output once it ends; removes it. */
  ended: Promise<{ exitCode: number; stdout: string; stderr: string }>;
}

/**
 * Starts the runner as the container's process, as the shim does: bundle mounted read-only, home
 * from bootstrap. `host` networking (as dstack's VM jobs) lets it reach the test's loopback servers.
 */
async function startRunnerContainer(image: string, o: { network?: "bridge" | "host" } = {}): Promise<Started> {
  const host = o.network === "host";
  // The server certificate names localhost, not the bridge gateway: bootstrap says which name to check.
  const { jobId, home } = await m.newRunnerHome((port) => `https://${host ? "127.0.0.1" : gateway}:${port}`, { serverName: "localhost" });
  const container = await docker().createContainer({
    Image: image,
    Cmd: RUNNER_ARGV,
    Labels: { [TEST_CONTAINER_LABEL]: "1" },
    HostConfig: { Binds: [`${bundle}:${MOUNT}:ro`, `${home}:/dstack/task`], NetworkMode: host ? "host" : "bridge" },
  });
  await container.start();
  const ended = (async () => {
    try {
      const { StatusCode } = (await container.wait()) as { StatusCode: number };
      const raw = (await container.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer;
      return { exitCode: StatusCode, ...demux(Buffer.isBuffer(raw) ? raw : Buffer.from(raw)) };
    } finally {
      await container.remove({ force: true }).catch(() => undefined);
    }
  })();
  return { container, jobId, ended };
}

function submit(s: Started, spec: MessageInitShape<typeof SubmitJobCommandSchema>) {
  const call = m.f.mesh.links.runner(s.jobId).call({ case: "submitJob", value: create(SubmitJobCommandSchema, { jobSubmissionId: s.jobId, runId: "run-42", runName: "box-run", repoId: "repo-7", ...spec }) }, { deadlineMs: 60_000 });
  return failFast(s, call);
}

/** `p`, or a failure with the container's output as soon as the container ends first. */
function failFast<T>(s: Started, p: Promise<T>): Promise<T> {
  return Promise.race([p, s.ended.then((e) => Promise.reject(new Error(`the runner container ended first (exit ${e.exitCode}):\n${e.stderr}${e.stdout}`)))]);
}

async function tgz(files: Record<string, string>): Promise<Buffer> {
  const src = mkdtempSync(join(tmpdir(), "code-"));
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(join(src, p, ".."), { recursive: true });
    writeFileSync(join(src, p), text);
  }
  const file = `${src}.tgz`;
  execFileSync("tar", ["-czf", file, "-C", src, ...Object.keys(files)]);
  return readFileSync(file);
}

describe("runner bundle", () => {
  it.each([TEST_IMAGES.busybox, TEST_IMAGES.glibc])("starts with the bundled loader and prints its version in %s", async (image) => {
    const r = await runContainer(image, [...RUNNER_ARGV, "--version"], { binds: [`${bundle}:${MOUNT}:ro`] });
    expect(r).toEqual({ exitCode: 0, stdout: "dstack-runner 0.1.0\n", stderr: "" });
  });
});

describe("runner in a container", () => {
  it("busybox (sh, no /etc/passwd): downloads and extracts the code, sees env and secrets, ends DONE and the container exits 0", async () => {
    const code = m.data.addBlob(await tgz({ "hello.txt": "hello from the code archive\n", "scripts/run.sh": 'echo "script ran in $PWD"\n' }));
    const s = await startRunnerContainer(TEST_IMAGES.busybox);
    const res = await submit(s, {
      workingDir: "/workflow",
      code,
      repo: { type: RunnerRepoType.LOCAL },
      secrets: { HF_TOKEN: "hf_xyz" },
      env: { MODEL: "llama", HF_TOKEN: "hf_xyz" },
      commands: ["cat hello.txt", "sh scripts/run.sh", 'echo "$0 $DSTACK_RUN_NAME $DSTACK_RUN_ID $DSTACK_REPO_ID $DSTACK_JOB_ID $HF_TOKEN $MODEL $HOME"', "[ -e /etc/passwd ] || echo no-passwd"],
    });
    expect(res).toMatchObject({ workingDir: "/workflow", username: "root" });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.DONE, exitStatus: 0, terminationReason: JobTerminationReason.DONE_BY_RUNNER });
    const out = await s.ended;
    expect(out.exitCode).toBe(0);
    expect(stateNames(m.heard(s.jobId))).toEqual(["PREPARING", "RUNNING", "DONE"]);
    expect(m.data.text(s.jobId, "stdout")).toBe(
      `hello from the code archive\nscript ran in /workflow\n/bin/sh box-run run-42 repo-7 ${s.jobId} hf_xyz llama /root\nno-passwd\n`,
    );
    expect(m.data.text(s.jobId, "runner")).toContain("running /bin/sh as root (uid 0) in /workflow");
    expect(out.stderr).toContain("job DONE (exit status 0)");
  });

  it("glibc (bash): runs the commands in bash and reports FAILED with the exit status; the container still exits 0", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.glibc);
    await submit(s, { commands: ['echo "bash ${BASH_VERSINFO[0]} as $(id -un) in $PWD"', "ls /dstack/runner/lib | wc -l", "exit 3", "echo unreachable"] });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.FAILED, exitStatus: 3, terminationReason: JobTerminationReason.CONTAINER_EXITED_WITH_ERROR });
    expect((await s.ended).exitCode).toBe(0);
    expect(m.data.text(s.jobId, "stdout")).toMatch(/^bash \d+ as root in \/workflow\n7\n$/);
  });

  it("busybox: samples the container's cgroup for GetMetrics, then stops with a grace period the job uses to clean up", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.busybox);
    await submit(s, { commands: ["trap 'echo cleaned up; exit 0' TERM", "echo ready", "while :; do sleep 1; done"] });
    await failFast(
      s,
      new Promise<void>((ok) => {
        const t = setInterval(() => m.data.text(s.jobId, "stdout").includes("ready") && (clearInterval(t), ok()), 20);
      }),
    );
    const link = m.f.mesh.links.runner(s.jobId);
    const a = await failFast(s, link.call({ case: "getMetrics", value: {} as never }));
    const b = await failFast(s, link.call({ case: "getMetrics", value: {} as never }));
    // The container's own cgroup: the runner's Node alone holds tens of MB.
    expect(a.memoryUsageBytes).toBeGreaterThan(10n * 1024n * 1024n);
    expect(a.memoryWorkingSetBytes).toBeLessThanOrEqual(a.memoryUsageBytes);
    expect(a.cpuUsageMicros).toBeGreaterThan(0n);
    expect(b.cpuUsageMicros).toBeGreaterThanOrEqual(a.cpuUsageMicros);
    expect(a.gpus).toEqual([]);
    await failFast(s, link.call({ case: "stopJob", value: { grace: durationFromMs(30_000), reason: JobTerminationReason.TERMINATED_BY_USER } as never }));
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.TERMINATED, terminationReason: JobTerminationReason.TERMINATED_BY_USER, exitStatus: 0 });
    expect((await s.ended).exitCode).toBe(0);
    expect(m.data.text(s.jobId, "stdout")).toBe("ready\ncleaned up\n");
  });
});

describe("runner in a container: attachable jobs under a pseudo-terminal (node-pty from the bundle)", () => {
  /** Resolves once the job's stdout contains `text`. */
  const printed = (s: Started, text: string) =>
    failFast(
      s,
      new Promise<void>((ok) => {
        const t = setInterval(() => m.data.text(s.jobId, "stdout").includes(text) && (clearInterval(t), ok()), 20);
      }),
    );

  it("busybox: the commands see a terminal of a sane size, stderr is logged as stdout, and a stop's SIGTERM reaches the group", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.busybox);
    await submit(s, { tty: true, commands: ["tty", "stty size", "echo to-stderr >&2", "trap 'echo got TERM; exit 7' TERM", "echo ready", "while :; do sleep 1; done"] });
    await printed(s, "ready");
    await failFast(s, m.f.mesh.links.runner(s.jobId).call({ case: "stopJob", value: { grace: durationFromMs(30_000), reason: JobTerminationReason.TERMINATED_BY_USER } as never }));
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.TERMINATED, terminationReason: JobTerminationReason.TERMINATED_BY_USER, exitStatus: 7 });
    expect((await s.ended).exitCode).toBe(0);
    const out = m.data.text(s.jobId, "stdout");
    // busybox sh may report its killed `sleep` on the terminal before the trap runs.
    expect(out).toMatch(/^\/dev\/pts\/\d+\n50 160\nto-stderr\nready\n(.*Terminated\n)?got TERM\n$/);
    expect(m.data.text(s.jobId, "stderr")).toBe("");
    expect(m.data.text(s.jobId, "runner")).toMatch(/running \/bin\/sh as root \(uid 0\) in \/workflow, pid \d+ on \/dev\/pts\/\d+/);
  });

  it("glibc (bash): a terminal for every stream, and the exit status arrives", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.glibc);
    await submit(s, { tty: true, commands: ["tty", "stty size", "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-terminals", "echo $TERM", "exit 3"] });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.FAILED, exitStatus: 3, terminationReason: JobTerminationReason.CONTAINER_EXITED_WITH_ERROR });
    expect((await s.ended).exitCode).toBe(0);
    expect(m.data.text(s.jobId, "stdout")).toMatch(/^\/dev\/pts\/\d+\n50 160\nall-terminals\nxterm-256color\n$/);
  });

  it("busybox: a job user (uid 1000, no /etc/passwd) owns its terminal and can reopen it", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.busybox);
    await submit(s, { tty: true, user: { uid: 1000, gid: 1000 }, workingDir: "/tmp/w", commands: ["id -u", "t=$(tty)", "stat -c '%u' $t", "echo via-dev-tty > /dev/tty"] });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.DONE, exitStatus: 0 });
    await s.ended;
    expect(m.data.text(s.jobId, "stdout")).toBe("1000\n1000\nvia-dev-tty\n");
  });

  it("without tty the same commands see pipes (no terminal)", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.busybox);
    await submit(s, { commands: ["tty || true", "echo to-stderr >&2"] });
    await failFast(s, m.finalState(s.jobId));
    await s.ended;
    expect(m.data.text(s.jobId, "stdout")).toBe("not a tty\n");
    expect(m.data.text(s.jobId, "stderr")).toBe("to-stderr\n");
  });
});

describe("runner in a container: git repos without git in the image", () => {
  let repo: TestRepo;
  let srv: GitHttpServer;
  beforeAll(async () => {
    repo = makeTestRepo();
    srv = await startGitHttp(repo.root, { user: "oauth2", password: "tok-xyz" });
  });
  afterAll(() => srv?.close());

  it("busybox: clones over HTTP at the commit with the token and applies the uploaded diff (new, modified, deleted files)", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.busybox);
    const url = `http://${gateway}:${srv.port}/${repo.name}`;
    await submit(s, {
      code: m.data.addBlob(repo.diff),
      repo: { type: RunnerRepoType.REMOTE, cloneUrl: url, branch: "main", hash: repo.first, oauthToken: "tok-xyz", singleBranch: true, repoDir: "repo" },
      commands: ["command -v git || echo no-git", "cd repo", "cat train.py new_module.py", "ls", "cat .git/HEAD", "grep -c tok-xyz .git/config || true"],
    });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.DONE, exitStatus: 0 });
    expect((await s.ended).exitCode).toBe(0);
    expect(m.data.text(s.jobId, "stdout")).toBe(`no-git\nprint('v1 with local changes')\nprint('epoch')\nVALUE = 42\nREADME.md\nnew_module.py\ntrain.py\n${repo.first}\n0\n`);
    expect(m.data.text(s.jobId, "runner")).toContain("applied the uploaded diff: 2 file(s) written, 1 removed");
    expect(m.data.text(s.jobId, "runner")).not.toContain("tok-xyz");
  });

  it("busybox: a wrong token fails the job with a message naming the repo URL", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.busybox);
    const url = `http://${gateway}:${srv.port}/${repo.name}`;
    await submit(s, { repo: { type: RunnerRepoType.REMOTE, cloneUrl: url, hash: repo.first, oauthToken: "tok-wrong" }, commands: ["echo unreachable"] });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.FAILED, terminationReason: JobTerminationReason.EXECUTOR_ERROR });
    expect(final.terminationMessage).toBe(`cannot clone ${url}: the server refused the credentials (HTTP 401/403): check the repo's token or user and password`);
    expect((await s.ended).exitCode).toBe(0);
    expect(m.data.text(s.jobId, "stdout")).toBe("");
  });
});

describe("runner in a container: git over SSH without git or ssh in the image (real sshd, git-upload-pack)", () => {
  let repo: TestRepo;
  let sshd: GitSshd;
  beforeAll(async () => {
    repo = makeTestRepo();
    sshd = await startGitSshd();
  });
  afterAll(() => sshd?.close());
  const url = () => `ssh://${sshd.user}@127.0.0.1:${sshd.port}${join(repo.root, repo.name)}`;

  it("busybox: clones over SSH with the job's key at the commit and applies the uploaded diff (new, modified, deleted files)", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.busybox, { network: "host" });
    await submit(s, {
      code: m.data.addBlob(repo.diff),
      repo: { type: RunnerRepoType.REMOTE, cloneUrl: url(), branch: "main", hash: repo.first, privateKey: sshd.key, singleBranch: true, repoDir: "repo" },
      commands: ["command -v git || echo no-git", "command -v ssh || echo no-ssh", "cd repo", "cat train.py new_module.py", "ls", "cat .git/HEAD", "ls /dstack/task /tmp | grep -c key || true"],
    });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.DONE, exitStatus: 0 });
    expect((await s.ended).exitCode).toBe(0);
    expect(m.data.text(s.jobId, "stdout")).toBe(`no-git\nno-ssh\nprint('v1 with local changes')\nprint('epoch')\nVALUE = 42\nREADME.md\nnew_module.py\ntrain.py\n${repo.first}\n0\n`);
    const runnerLog = m.data.text(s.jobId, "runner");
    expect(runnerLog).toMatch(/SSH host key of 127\.0\.0\.1:\d+: SHA256:\S+ \(not checked\)/);
    expect(runnerLog).toContain("applied the uploaded diff: 2 file(s) written, 1 removed");
  });

  it("busybox: a key the server refuses fails the job naming the repo URL; so does an unreachable host", async () => {
    const s = await startRunnerContainer(TEST_IMAGES.busybox, { network: "host" });
    await submit(s, { repo: { type: RunnerRepoType.REMOTE, cloneUrl: url(), hash: repo.first, privateKey: sshd.wrongKey }, commands: ["echo unreachable"] });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.FAILED, terminationReason: JobTerminationReason.EXECUTOR_ERROR });
    expect(final.terminationMessage).toBe(
      `cannot clone ${url()}: the SSH server refused the key for ${sshd.user}@127.0.0.1:${sshd.port}: check the repo's SSH key (the server must accept its public key)`,
    );
    expect((await s.ended).exitCode).toBe(0);
    expect(m.data.text(s.jobId, "stdout")).toBe("");

    const s2 = await startRunnerContainer(TEST_IMAGES.busybox, { network: "host" });
    const closed = "ssh://git@127.0.0.1:1/org/repo.git";
    await submit(s2, { repo: { type: RunnerRepoType.REMOTE, cloneUrl: closed, privateKey: sshd.key }, commands: ["echo unreachable"] });
    const final2 = await failFast(s2, m.finalState(s2.jobId));
    expect(final2).toMatchObject({ state: JobState.FAILED, terminationReason: JobTerminationReason.EXECUTOR_ERROR });
    expect(final2.terminationMessage).toBe(`cannot clone ${closed}: cannot reach 127.0.0.1:1 over SSH: connect ECONNREFUSED 127.0.0.1:1`);
    expect((await s2.ended).exitCode).toBe(0);
  });
});

describe("runner in a container: python: picks the image's interpreter", () => {
  const IMAGE = "dstack-test/pythons:1";
  beforeAll(() => {
    // busybox plus fake python3.11 / python3.12 (python3 = 3.12), committed as a local image.
    const dir = mkdtempSync(join(tmpdir(), "pythons-"));
    for (const v of ["3.11", "3.12"]) writeFileSync(join(dir, `python${v}`), `#!/bin/sh\necho "Python ${v}.0 $*"\n`, { mode: 0o755 });
    const id = execFileSync("docker", ["create", "--label", `${TEST_CONTAINER_LABEL}=1`, TEST_IMAGES.busybox, "sh"], { encoding: "utf8" }).trim();
    try {
      execFileSync("docker", ["cp", `${dir}/.`, `${id}:/usr/bin/`]);
      execFileSync("docker", ["commit", id, IMAGE]);
    } finally {
      execFileSync("docker", ["rm", "-f", id]);
    }
    // python3 is the image's default interpreter, 3.12.
    const id2 = execFileSync("docker", ["create", "--label", `${TEST_CONTAINER_LABEL}=1`, IMAGE, "sh"], { encoding: "utf8" }).trim();
    try {
      execFileSync("docker", ["cp", join(dir, "python3.12"), `${id2}:/usr/bin/python3`]);
      execFileSync("docker", ["commit", id2, IMAGE]);
    } finally {
      execFileSync("docker", ["rm", "-f", id2]);
    }
  });

  it("python: 3.11 makes python and python3 the image's python3.11, ahead of its default python3", async () => {
    const s = await startRunnerContainer(IMAGE);
    await submit(s, { python: "3.11", commands: ["python3 --version", "python -c 'print(1)'", "command -v python3", "/usr/bin/python3 --version"] });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.DONE, exitStatus: 0 });
    expect((await s.ended).exitCode).toBe(0);
    expect(m.data.text(s.jobId, "stdout")).toBe("Python 3.11.0 --version\nPython 3.11.0 -c print(1)\n/dstack/python/bin/python3\nPython 3.12.0 --version\n");
    expect(m.data.text(s.jobId, "runner")).toContain("python 3.11: /usr/bin/python3.11 is python and python3 on PATH");
  });

  it("python: 3.10, which the image lacks, fails the job before the commands, naming the version", async () => {
    const s = await startRunnerContainer(IMAGE);
    await submit(s, { python: "3.10", commands: ["echo unreachable"] });
    const final = await failFast(s, m.finalState(s.jobId));
    expect(final).toMatchObject({ state: JobState.FAILED, terminationReason: JobTerminationReason.EXECUTOR_ERROR });
    expect(final.terminationMessage).toBe('python 3.10 was requested (python: "3.10"), but the image has no python3.10 on PATH (it has python3.11, python3.12); pick one of those, or an image with Python 3.10');
    expect((await s.ended).exitCode).toBe(0);
    expect(m.data.text(s.jobId, "stdout")).toBe("");
  });
});
