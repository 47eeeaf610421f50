// dstack-runner as a real process on this host (the built bundle run by this Node), against a
// real mesh server: enrollment from bootstrap.json, the runner link, SubmitJob/StopJob/GetMetrics/
// Ping, log shipping with acks, reconnects, and exiting when the job is over.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { JobState, LinkErrorCode, RunnerState, SubmitJobCommandSchema } from "@dstack/proto/agent";
import { JobTerminationReason } from "@dstack/proto/api";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildRunnerBundle } from "../../scripts/build-runner-bundle.js";
import { startRunnerMesh, stateNames, type RunnerMesh } from "./harness.js";

let m: RunnerMesh;
let bundle: string;
const procs: ChildProcess[] = [];

beforeAll(async () => {
  bundle = (await buildRunnerBundle({ log: () => {} })).dir;
  m = await startRunnerMesh();
});
afterAll(async () => {
  for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
  await m?.cleanup();
});

interface RunnerProc {
  proc: ChildProcess;
  exited: Promise<number | null>;
  stderr(): string;
}

function startRunner(home: string): RunnerProc {
  const proc = spawn(process.execPath, [join(bundle, "runner.js"), "--home", home], { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
  procs.push(proc);
  let err = "";
  proc.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
  proc.stdout!.resume();
  const exited = new Promise<number | null>((ok) => proc.once("exit", (code) => ok(code)));
  return { proc, exited, stderr: () => err };
}

/** `p`, or a failure with the runner's stderr as soon as the runner dies abnormally. */
function alive<T>(r: RunnerProc, p: Promise<T>): Promise<T> {
  const died = r.exited.then((code) => (code === 0 ? new Promise<never>(() => {}) : Promise.reject(new Error(`dstack-runner exited with ${code}:\n${r.stderr()}`))));
  return Promise.race([p, died]);
}

const submit = (jobId: string, spec: MessageInitShape<typeof SubmitJobCommandSchema>) =>
  m.f.mesh.links.runner(jobId).call({ case: "submitJob", value: create(SubmitJobCommandSchema, { jobSubmissionId: jobId, runId: "run-1", runName: "host-run", ...spec }) }, { deadlineMs: 30_000 });

describe("dstack-runner process", () => {
  it("enrolls from bootstrap.json, runs the job, ships every line, reports DONE and exits 0 once the logs are acknowledged", async () => {
    const { jobId, home } = await m.newRunnerHome((p) => `https://127.0.0.1:${p}`);
    const r = startRunner(home);
    const wd = join(home, "wd");
    const res = await alive(r, submit(jobId, { workingDir: wd, commands: ["for i in $(seq 1 200); do echo line $i; done", "echo oops >&2"] }));
    expect(res).toMatchObject({ workingDir: wd, username: "root" });
    const final = await alive(r, m.finalState(jobId));
    expect(final).toMatchObject({ state: JobState.DONE, terminationReason: JobTerminationReason.DONE_BY_RUNNER, exitStatus: 0 });
    expect(await r.exited).toBe(0);
    expect(stateNames(m.heard(jobId))).toEqual(["PREPARING", "RUNNING", "DONE"]);
    expect(m.data.text(jobId, "stdout")).toBe(Array.from({ length: 200 }, (_, i) => `line ${i + 1}\n`).join(""));
    expect(m.data.text(jobId, "stderr")).toBe("oops\n");
    expect(m.data.text(jobId, "runner")).toMatch(/serving job submission .*\n[\s\S]*running \/bin\/bash as root[\s\S]*job DONE \(exit status 0\)/);
    expect(existsSync(join(home, "identity", "agent.key"))).toBe(true);
    expect(r.stderr()).toContain(`enrolled as job submission ${jobId}`);
  });

  it("links at once with a job identity issued by the server (no enrollment; the join token is not even valid) and runs the job", async () => {
    const { jobId, home } = await m.newRunnerHome(
      (p) => `https://127.0.0.1:${p}`,
      (id) => {
        const issued = m.f.mesh.issueRunnerIdentity(id);
        return { joinToken: "dsj.not.a-valid-token", certificatePem: issued.certPem, privateKeyPem: issued.keyPem };
      },
    );
    const r = startRunner(home);
    const wd = join(home, "wd");
    await alive(r, submit(jobId, { workingDir: wd, commands: ["echo issued identity"] }));
    expect(await alive(r, m.finalState(jobId))).toMatchObject({ state: JobState.DONE, exitStatus: 0 });
    expect(await r.exited).toBe(0);
    expect(m.data.text(jobId, "stdout")).toBe("issued identity\n");
    expect(r.stderr()).toContain(`using the job identity issued by the server: job submission ${jobId}`);
    expect(r.stderr()).not.toContain("enrolling");
  });

  it("answers a re-sent SubmitJob with the first answer, refuses another job, and answers Ping and GetMetrics", async () => {
    const { jobId, home } = await m.newRunnerHome((p) => `https://127.0.0.1:${p}`);
    const r = startRunner(home);
    const link = m.f.mesh.links.runner(jobId);
    expect((await alive(r, link.call({ case: "ping", value: {} as never }, { deadlineMs: 30_000 }))).agentTime).toBeDefined();
    expect(m.report(jobId)).toMatchObject({ agentVersion: "0.1.0", runnerState: RunnerState.WAIT_SUBMIT, jobSubmissionId: jobId, jobStates: [] });
    const spec = { workingDir: join(home, "wd"), commands: ["echo ready", "while :; do sleep 0.05; done"] };
    const first = await submit(jobId, spec);
    const again = await submit(jobId, spec);
    expect(again).toEqual(first);
    await expect(link.call({ case: "submitJob", value: create(SubmitJobCommandSchema, { jobSubmissionId: "00000000-0000-0000-0000-000000000000", commands: ["true"] }) })).rejects.toMatchObject({
      linkCode: LinkErrorCode.FAILED_PRECONDITION,
    });
    const metrics = await link.call({ case: "getMetrics", value: {} as never });
    expect(metrics.cpuUsageMicros).toBeGreaterThan(0n);
    expect(metrics.memoryUsageBytes).toBeGreaterThan(0n);
    await link.call({ case: "stopJob", value: { grace: durationFromMs(5_000), reason: JobTerminationReason.TERMINATED_BY_USER } as never });
    expect(await m.finalState(jobId)).toMatchObject({ state: JobState.TERMINATED, terminationReason: JobTerminationReason.TERMINATED_BY_USER });
    expect(stateNames(m.heard(jobId))).toEqual(["PREPARING", "RUNNING", "TERMINATED"]);
    expect(await r.exited).toBe(0);
  });

  it("exits 0 when stopped before any job came", async () => {
    const { jobId, home } = await m.newRunnerHome((p) => `https://127.0.0.1:${p}`);
    const r = startRunner(home);
    const link = m.f.mesh.links.runner(jobId);
    await alive(r, link.call({ case: "stopJob", value: { reason: JobTerminationReason.TERMINATED_BY_SERVER } as never }, { deadlineMs: 30_000 }));
    expect(await r.exited).toBe(0);
    expect(m.heard(jobId)).toEqual([]);
    expect(m.data.text(jobId, "runner")).toContain("stopped before a job was submitted");
  });

  it("keeps its identity across a restart (the one-time token is spent) and finishes the job", async () => {
    const { jobId, home } = await m.newRunnerHome((p) => `https://127.0.0.1:${p}`);
    const first = startRunner(home);
    await alive(first, m.f.mesh.links.runner(jobId).call({ case: "ping", value: {} as never }, { deadlineMs: 30_000 }));
    first.proc.kill("SIGKILL");
    await first.exited;
    const second = startRunner(home);
    await alive(second, submit(jobId, { workingDir: join(home, "wd"), commands: ["echo after restart"] }));
    expect((await alive(second, m.finalState(jobId))).state).toBe(JobState.DONE);
    expect(await second.exited).toBe(0);
    expect(second.stderr()).not.toContain("enrolling");
    expect(m.data.text(jobId, "stdout")).toBe("after restart\n");
  });

  it("rides out a server restart mid-job: reconnects, reports its job states again, and loses no log line", async () => {
    const { jobId, home } = await m.newRunnerHome((p) => `https://127.0.0.1:${p}`);
    const r = startRunner(home);
    const marker = join(home, "go");
    await alive(r, submit(jobId, { workingDir: join(home, "wd"), commands: [`i=0; while [ ! -f ${marker} ]; do i=$((i+1)); echo tick $i; sleep 0.02; done`, "echo finished"] }));
    await new Promise<void>((ok) => {
      const t = setInterval(() => m.data.text(jobId, "stdout").includes("tick 5\n") && (clearInterval(t), ok()), 10);
    });
    await m.restart();
    await new Promise<void>((ok) => {
      const before = m.data.text(jobId, "stdout").length;
      const t = setInterval(() => m.data.text(jobId, "stdout").length > before + 20 && (clearInterval(t), ok()), 10);
    });
    writeFileSync(marker, "");
    expect((await alive(r, m.finalState(jobId))).state).toBe(JobState.DONE);
    expect(await r.exited).toBe(0);
    const lines = m.data.text(jobId, "stdout").trimEnd().split("\n");
    expect(lines.at(-1)).toBe("finished");
    const ticks = lines.slice(0, -1);
    expect(ticks).toEqual(ticks.map((_, i) => `tick ${i + 1}`));
    // After the restart the runner's state report carried PREPARING and RUNNING again.
    expect(m.heard(jobId).filter((s) => s.state === JobState.RUNNING).length).toBeGreaterThanOrEqual(2);
  });

  it("tells the final state only once every log line is stored, also when the job ended while the server was away", async () => {
    const { jobId, home } = await m.newRunnerHome((p) => `https://127.0.0.1:${p}`);
    const r = startRunner(home);
    const marker = join(home, "go");
    await alive(r, submit(jobId, { workingDir: join(home, "wd"), commands: [`while [ ! -f ${marker} ]; do sleep 0.02; done`, "for i in $(seq 1 300); do echo out $i; done"] }));
    await m.f.mesh.close(); // the server goes away…
    writeFileSync(marker, ""); // …the job prints its output and ends while nobody listens
    await alive(r, new Promise<void>((ok) => {
      const t = setInterval(() => r.stderr().includes("job DONE") && (clearInterval(t), ok()), 10);
    }));
    await m.restart();
    const final = await alive(r, m.finalState(jobId));
    // What the server had stored when it heard the job was over (a log follower ends there).
    const storedAtFinal = m.data.text(jobId, "stdout");
    expect(final.state).toBe(JobState.DONE);
    expect(storedAtFinal).toBe(Array.from({ length: 300 }, (_, i) => `out ${i + 1}\n`).join(""));
    expect(await r.exited).toBe(0);
  });
});
