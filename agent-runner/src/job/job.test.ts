import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import http2 from "node:http2";
import { mkdirSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { CodeService, DownloadResponseSchema, JobState, LogStream, RunnerRepoType, SubmitJobCommandSchema, type DownloadRequest, type JobStateChanged } from "@dstack/proto/agent";
import { JobTerminationReason } from "@dstack/proto/api";
import type { MessageInitShape } from "@bufbuild/protobuf";
import * as tar from "tar";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestRepo, startGitHttp } from "../../../test/runner/git-http.js";
import { Job } from "./job.js";

/** A real CodeService over h2c; `cutAfter` ends the first stream after that many bytes of a blob. */
class BlobServer {
  blobs = new Map<string, Buffer>();
  requests: { sha256: string; offset: number }[] = [];
  cutAfter = 0;
  private server!: http2.Http2Server;
  port = 0;

  add(data: Buffer): { sha256: string; sizeBytes: bigint } {
    const sha256 = createHash("sha256").update(data).digest("hex");
    this.blobs.set(sha256, data);
    return { sha256, sizeBytes: BigInt(data.length) };
  }

  async listen(): Promise<this> {
    const self = this;
    const routes = (r: ConnectRouter) =>
      r.service(CodeService, {
        async *download(req: DownloadRequest) {
          self.requests.push({ sha256: req.sha256, offset: Number(req.offset) });
          const blob = self.blobs.get(req.sha256);
          if (!blob) throw new ConnectError(`no blob ${req.sha256}`, Code.NotFound);
          let off = Number(req.offset);
          const cut = self.cutAfter;
          self.cutAfter = 0;
          do {
            const chunk = blob.subarray(off, off + 1000);
            yield create(DownloadResponseSchema, { totalSize: BigInt(blob.length), sha256: req.sha256, offset: BigInt(off), data: chunk });
            off += chunk.length;
            if (cut && off >= cut) throw new ConnectError("cut", Code.Unavailable);
          } while (off < blob.length);
        },
      });
    this.server = http2.createServer(connectNodeAdapter({ routes }));
    await new Promise<void>((ok) => this.server.listen(0, "127.0.0.1", ok));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  close(): Promise<void> {
    return new Promise((ok) => this.server.close(() => ok()));
  }
}

const blobs = new BlobServer();
beforeAll(() => blobs.listen());
afterAll(() => blobs.close());

interface Ran {
  states: JobStateChanged[];
  out: string;
  err: string;
  runner: string;
  final: JobStateChanged;
  job: Job;
}

function makeJob(spec: MessageInitShape<typeof SubmitJobCommandSchema>, env: Record<string, string> = {}) {
  const scratch = mkdtempSync(join(tmpdir(), "runner-job-"));
  const r = { states: [] as JobStateChanged[], out: "", err: "", runner: "" };
  const job = new Job(create(SubmitJobCommandSchema, { jobSubmissionId: "sub-1", runId: "run-1", runName: "my-run", repoId: "repo-1", workingDir: join(scratch, "wd"), ...spec }), {
    blobDir: join(scratch, "blobs"),
    scratchDir: scratch,
    connect: () => {
      const url = `http://127.0.0.1:${blobs.port}`;
      const session = new Http2SessionManager(url);
      return { transport: createGrpcTransport({ baseUrl: url, sessionManager: session }), close: () => session.abort() };
    },
    output: (stream, data) => {
      if (stream === LogStream.STDOUT) r.out += data.toString();
      else if (stream === LogStream.STDERR) r.err += data.toString();
      else r.runner += data.toString();
    },
    diag: (m) => (r.runner += m + "\n"),
    onState: (s) => r.states.push(s),
    containerEnv: { PATH: process.env.PATH, ...env },
    mpiHostfile: join(scratch, "mpi", "hostfile"),
  });
  return { job, r, scratch };
}

async function run(spec: MessageInitShape<typeof SubmitJobCommandSchema>, env?: Record<string, string>): Promise<Ran & { scratch: string }> {
  const { job, r, scratch } = makeJob(spec, env);
  job.start();
  const final = await job.done;
  return { ...r, final, job, scratch };
}

const states = (r: { states: JobStateChanged[] }) => r.states.map((s) => JobState[s.state]);

async function tarball(files: Record<string, string>, gzip: boolean): Promise<Buffer> {
  const src = mkdtempSync(join(tmpdir(), "tar-src-"));
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(join(src, p, ".."), { recursive: true });
    writeFileSync(join(src, p), text);
  }
  const file = join(mkdtempSync(join(tmpdir(), "tar-out-")), "a.tar");
  await tar.c({ cwd: src, file, gzip, portable: true }, Object.keys(files));
  return readFileSync(file);
}

describe("job lifecycle", () => {
  it("runs the commands in one shell and ends DONE with status 0", async () => {
    const r = await run({ commands: ["cd sub 2>/dev/null || mkdir sub && cd sub", "echo in $(basename $PWD)", "echo to-stderr >&2"] });
    expect(states(r)).toEqual(["PREPARING", "RUNNING", "DONE"]);
    expect(r.final).toMatchObject({ terminationReason: JobTerminationReason.DONE_BY_RUNNER, exitStatus: 0, jobSubmissionId: "sub-1" });
    expect(r.out).toBe("in sub\n");
    expect(r.err).toBe("to-stderr\n");
    expect(r.job.workingDir).toBe(join(r.scratch, "wd"));
    expect(statSync(r.job.workingDir).isDirectory()).toBe(true);
  });

  it("ends FAILED with the exit status of the failing command", async () => {
    const r = await run({ commands: ["echo before", "exit 3", "echo after"] });
    expect(states(r)).toEqual(["PREPARING", "RUNNING", "FAILED"]);
    expect(r.final).toMatchObject({ terminationReason: JobTerminationReason.CONTAINER_EXITED_WITH_ERROR, exitStatus: 3, terminationMessage: "the commands exited with status 3" });
    expect(r.out).toBe("before\n");
  });

  it("gives the commands the container env, DSTACK_* variables, secrets and the job env", async () => {
    const r = await run(
      {
        commands: ['echo "$DSTACK_RUN_NAME $DSTACK_RUN_ID $DSTACK_JOB_ID $DSTACK_REPO_ID $DSTACK_NODE_RANK/$DSTACK_NODES_NUM $DSTACK_GPUS_PER_NODE"', 'echo "$FROM_IMAGE $HF_TOKEN $MODEL $DSTACK_WORKING_DIR"', "cat $DSTACK_MPI_HOSTFILE"],
        secrets: { HF_TOKEN: "hf_secret" },
        env: { MODEL: "llama", FROM_IMAGE: "job-wins" },
        clusterInfo: { jobIps: ["10.0.0.1", "10.0.0.2"], masterJobIp: "10.0.0.1", gpusPerJob: 4, nodeRank: 1, nodesNum: 2, gpusNum: 8 },
      },
      { FROM_IMAGE: "image" },
    );
    expect(r.final.state).toBe(JobState.DONE);
    const wd = join(r.scratch, "wd");
    expect(r.out).toBe(`my-run run-1 sub-1 repo-1 1/2 4\njob-wins hf_secret llama ${wd}\n10.0.0.1 slots=4\n10.0.0.2 slots=4\n`);
  });

  it("runs an entrypoint with the commands as its arguments", async () => {
    const r = await run({ entrypoint: ["/bin/sh", "-c", 'echo "$0 $1"'], commands: ["first", "second"] });
    expect(r.out).toBe("first second\n");
  });

  it("runs as the job user when the runner is root", async () => {
    const r = await run({ commands: ["id -u; id -g", "touch mine", "stat -c %u mine"], user: { uid: 4321, gid: 4322 } });
    expect(r.final.state).toBe(JobState.DONE);
    expect(r.out).toBe("4321\n4322\n4321\n");
    expect(r.job.user.username).toBe("4321");
  });

  it("stops with SIGTERM, lets the job clean up within the grace period, and ends TERMINATED with the stop's reason", async () => {
    const { job, r } = makeJob({ commands: ["trap 'echo cleanup; exit 5' TERM", "echo ready", "while :; do sleep 0.05; done"] });
    const running = new Promise<void>((ok) => {
      const t = setInterval(() => r.out.includes("ready") && (clearInterval(t), ok()), 5);
    });
    job.start();
    await running;
    job.stop(60_000, JobTerminationReason.TERMINATED_BY_USER, "stopped by the user");
    const final = await job.done;
    expect(states(r)).toEqual(["PREPARING", "RUNNING", "TERMINATED"]);
    expect(final).toMatchObject({ terminationReason: JobTerminationReason.TERMINATED_BY_USER, terminationMessage: "stopped by the user", exitStatus: 5 });
    expect(r.out).toContain("cleanup\n");
  });

  it("kills a job that ignores SIGTERM once the grace period is over", async () => {
    const { job, r } = makeJob({ commands: ["trap '' TERM", "echo ready", "while :; do sleep 0.05; done"] });
    job.start();
    await new Promise<void>((ok) => {
      const t = setInterval(() => r.out.includes("ready") && (clearInterval(t), ok()), 5);
    });
    job.stop(50, JobTerminationReason.TERMINATED_BY_SERVER);
    expect(await job.done).toMatchObject({ state: JobState.TERMINATED, terminationReason: JobTerminationReason.TERMINATED_BY_SERVER, exitStatus: 137 });
  });

  it("terminates a job that runs past max_duration", async () => {
    const r = await run({ commands: ["echo started", "sleep 30"], maxDuration: durationFromMs(200) });
    expect(states(r)).toEqual(["PREPARING", "RUNNING", "TERMINATED"]);
    expect(r.final.terminationReason).toBe(JobTerminationReason.MAX_DURATION_EXCEEDED);
  });

  it("fails with EXECUTOR_ERROR when the shell does not exist in the image", async () => {
    const r = await run({ commands: ["true"], shell: "/no/such/sh" });
    expect(states(r)).toEqual(["PREPARING", "FAILED"]);
    expect(r.final).toMatchObject({ terminationReason: JobTerminationReason.EXECUTOR_ERROR, terminationMessage: "cannot start the commands: /no/such/sh does not exist in the image" });
    expect(r.final.exitStatus).toBeUndefined();
  });

  it("refuses a user the image does not have, before accepting the job", () => {
    expect(() => makeJob({ commands: ["true"], user: { username: "no-such-user-here" } })).toThrow(/user 'no-such-user-here' does not exist/);
  });
});

describe("code and files", () => {
  it("downloads the code tarball (resuming after a cut), checks it and extracts it into the working dir", async () => {
    const code = blobs.add(await tarball({ "hello.txt": "hello from the repo\n", "src/main.sh": "echo main\n", "big.bin": randomBytes(6000).toString("base64") }, true));
    blobs.cutAfter = 2000;
    blobs.requests = [];
    const r = await run({ commands: ["cat hello.txt", "sh src/main.sh", "wc -c < big.bin"], code, repo: { type: RunnerRepoType.LOCAL } });
    expect(r.final.state).toBe(JobState.DONE);
    expect(r.out).toBe("hello from the repo\nmain\n8000\n");
    expect(blobs.requests.map((q) => q.offset)).toEqual([0, 2000]);
    expect(r.runner).toMatch(/retry 1 from byte 2000/);
  });

  it("extracts plain-tar files archives to their paths, relative to the working dir or absolute", async () => {
    const a = blobs.add(await tarball({ "config.yaml": "lr: 0.1\n" }, false));
    const b = blobs.add(await tarball({ "data.csv": "1,2\n" }, true));
    const abs = mkdtempSync(join(tmpdir(), "abs-"));
    const r = await run({
      commands: ["cat conf/config.yaml", `cat ${abs}/data.csv`],
      fileArchives: [
        { archive: a, path: "conf" },
        { archive: b, path: abs },
      ],
    });
    expect(r.final.state).toBe(JobState.DONE);
    expect(r.out).toBe("lr: 0.1\n1,2\n");
  });

  it("fails with EXECUTOR_ERROR when the blob does not match its hash", async () => {
    const good = blobs.add(Buffer.from("real"));
    blobs.blobs.set(good.sha256, Buffer.from("fake"));
    const r = await run({ commands: ["true"], code: good });
    expect(states(r)).toEqual(["PREPARING", "FAILED"]);
    expect(r.final.terminationReason).toBe(JobTerminationReason.EXECUTOR_ERROR);
    expect(r.final.terminationMessage).toMatch(/content hashes to/);
  });

  it("an SSH repo without git in the image uses the built-in git: a key it cannot read fails the job naming the repo URL", async () => {
    const empty = mkdtempSync(join(tmpdir(), "no-git-"));
    const r = await run({ commands: ["true"], repo: { type: RunnerRepoType.REMOTE, cloneUrl: "git@github.com:dstackai/dstack.git", privateKey: "k" } }, { PATH: empty });
    expect(states(r)).toEqual(["PREPARING", "FAILED"]);
    expect(r.final.terminationReason).toBe(JobTerminationReason.EXECUTOR_ERROR);
    expect(r.final.terminationMessage).toMatch(/^cannot clone git@github\.com:dstackai\/dstack\.git: the repo's SSH private key cannot be used: /);
  });

  describe("without git in the image (built-in git over smart HTTP, real git http-backend)", () => {
    /** A PATH with the tools the commands use and no git. */
    const noGit = () => {
      const dir = mkdtempSync(join(tmpdir(), "no-git-"));
      for (const t of ["cat", "ls", "sh"]) symlinkSync(`/bin/${t}`, join(dir, t));
      return { PATH: dir };
    };

    it("clones at the commit with the token and applies the diff (new, modified and deleted files)", async () => {
      const repo = makeTestRepo();
      const srv = await startGitHttp(repo.root, { user: "oauth2", password: "tok-123" });
      try {
        const url = `http://127.0.0.1:${srv.port}/${repo.name}`;
        const r = await run(
          {
            commands: ["cat train.py new_module.py", "ls"],
            code: blobs.add(repo.diff),
            repo: { type: RunnerRepoType.REMOTE, cloneUrl: url, branch: "main", hash: repo.first, oauthToken: "tok-123", singleBranch: true, configName: "Ada" },
          },
          noGit(),
        );
        expect(r.final.state).toBe(JobState.DONE);
        expect(r.out).toBe("print('v1 with local changes')\nprint('epoch')\nVALUE = 42\nREADME.md\nnew_module.py\ntrain.py\n");
        expect(r.runner).toContain("cloning with the runner's built-in git");
        expect(r.runner).not.toContain("tok-123");
        expect(srv.requests.some((q) => q.status === 401)).toBe(true); // asked, then answered with the token
      } finally {
        await srv.close();
      }
    });

    it("a wrong credential fails the job with a message naming the repo URL", async () => {
      const repo = makeTestRepo();
      const srv = await startGitHttp(repo.root, { user: "alice", password: "right" });
      try {
        const url = `http://127.0.0.1:${srv.port}/${repo.name}`;
        const r = await run({ commands: ["true"], repo: { type: RunnerRepoType.REMOTE, cloneUrl: url.replace("//", "//alice:wrong@"), hash: repo.first } }, noGit());
        expect(states(r)).toEqual(["PREPARING", "FAILED"]);
        expect(r.final.terminationMessage).toBe(`cannot clone ${url}: the server refused the credentials (HTTP 401/403): check the repo's token or user and password`);
      } finally {
        await srv.close();
      }
    });
  });

  it("clones a remote repo with the image's git, checks out the commit and applies the uploaded diff", async () => {
    const origin = mkdtempSync(join(tmpdir(), "origin-"));
    const git = (...args: string[]) => execFileSync("git", ["-C", origin, ...args], { encoding: "utf8" }).trim();
    git("init", "-q", "-b", "main");
    writeFileSync(join(origin, "train.py"), "print('v1')\n");
    git("add", ".");
    git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "one");
    const first = git("rev-parse", "HEAD");
    writeFileSync(join(origin, "train.py"), "print('v2')\n");
    git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "two");
    const diff = blobs.add(Buffer.from("--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-print('v1')\n+print('v1 with local changes')\n"));
    const r = await run({
      commands: ["cat train.py", "git log --format=%s -1", "git config user.name"],
      code: diff,
      repo: { type: RunnerRepoType.REMOTE, cloneUrl: `file://${origin}`, branch: "main", hash: first, configName: "Ada", configEmail: "ada@example.com" },
    });
    expect(r.runner).not.toMatch(/failed/);
    expect(r.final.state).toBe(JobState.DONE);
    expect(r.out).toBe("print('v1 with local changes')\none\nAda\n");
  });
});
