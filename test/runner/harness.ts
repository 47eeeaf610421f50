// Test harness for dstack-runner: a real mesh server (mTLS agent port, real join tokens, real
// runner link) with in-memory data hooks standing in for log storage and code blobs, and helpers
// to bootstrap a runner home and to watch its job states and logs arrive.
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { JobState, type JobStateChanged, type RunnerStateReport } from "@dstack/proto/agent";
import type { AgentLink, MeshDataHooks, MeshLogEntry } from "../../server/src/mesh/index.js";
import { createMeshServer } from "../../server/src/mesh/index.js";
import { FAST_LINK, startMesh, type MeshFixture } from "../mesh/harness.js";

/** Log storage and blobs as the server's data hooks contract says: contiguous from 0, duplicates skipped, gaps refused. */
export class MemoryData implements MeshDataHooks {
  readonly logs = new Map<string, MeshLogEntry[]>();
  readonly blobs = new Map<string, Uint8Array>();

  async appendLogs(job: string, first: number, entries: readonly MeshLogEntry[]): Promise<number> {
    const stored = this.logs.get(job) ?? [];
    this.logs.set(job, stored);
    if (first > stored.length) return stored.length;
    entries.forEach((e, i) => first + i === stored.length && stored.push(e));
    return stored.length;
  }

  async readCode(_job: string, sha256: string): Promise<Uint8Array | null> {
    return this.blobs.get(sha256) ?? null;
  }

  addBlob(data: Uint8Array): { sha256: string; sizeBytes: bigint } {
    const sha256 = createHash("sha256").update(data).digest("hex");
    this.blobs.set(sha256, data);
    return { sha256, sizeBytes: BigInt(data.length) };
  }

  /** One stream of a job's log, as text. */
  text(job: string, stream: MeshLogEntry["stream"]): string {
    return (this.logs.get(job) ?? [])
      .filter((e) => e.stream === stream)
      .map((e) => Buffer.from(e.data).toString())
      .join("");
  }
}

export interface RunnerMesh {
  f: MeshFixture;
  data: MemoryData;
  /** The agent port on every interface, so containers on the bridge reach it at the docker0 address. */
  port: number;
  /** A new mesh server process-equivalent on the same home, database and port (agents must reconnect). */
  restart(): Promise<void>;
  /** A job row plus a runner home with bootstrap.json for `agentUrl` (and `extra` bootstrap fields). */
  newRunnerHome(agentUrl: (port: number) => string, extra?: { serverName?: string; joinToken?: string; certificatePem?: string; privateKeyPem?: string } | ((jobId: string) => { serverName?: string; joinToken?: string; certificatePem?: string; privateKeyPem?: string })): Promise<{ jobId: string; home: string }>;
  /** Resolves with the job's final state as the server hears it (event or state report). */
  finalState(jobId: string, timeoutMs?: number): Promise<JobStateChanged>;
  /** Every job state the server heard for `jobId`, in order (duplicates from reconnects kept). */
  heard(jobId: string): JobStateChanged[];
  /** The last state report of the runner. */
  report(jobId: string): RunnerStateReport | null;
  cleanup(): Promise<void>;
}

const FINAL = new Set([JobState.DONE, JobState.FAILED, JobState.TERMINATED]);

export async function startRunnerMesh(): Promise<RunnerMesh> {
  const data = new MemoryData();
  const f = await startMesh("sqlite", { data });
  const heard = new Map<string, JobStateChanged[]>();
  const waiters: { jobId: string; resolve(s: JobStateChanged): void }[] = [];
  const record = (jobId: string, s: JobStateChanged) => {
    const list = heard.get(jobId) ?? [];
    heard.set(jobId, list);
    list.push(s);
    if (FINAL.has(s.state)) for (const w of waiters.filter((x) => x.jobId === jobId)) w.resolve(s);
  };
  // Listen on all interfaces: a container on the default bridge dials the docker0 gateway.
  const listen = async (port: number) => {
    await f.mesh.close();
    f.mesh = createMeshServer({ settings: f.env.settings, orm: f.orm, link: FAST_LINK, data });
    f.mesh.links.on("event", (link: AgentLink, ev) => {
      if (link.kind !== "runner") return;
      if (ev.case === "jobStateChanged") record(link.id, ev.value as JobStateChanged);
      if (ev.case === "stateReport") for (const s of (ev.value as RunnerStateReport).jobStates) record(link.id, s);
    });
    f.port = (await f.mesh.listen(port, "0.0.0.0")).port;
    f.url = `https://127.0.0.1:${f.port}`;
    return f.port;
  };
  const port = await listen(0);
  return {
    f,
    data,
    port,
    restart: () => listen(port).then(() => {}),
    async newRunnerHome(agentUrl, extra = {}) {
      const jobId = await f.addJob(null);
      const { token } = await f.mesh.joinTokens.create({ projectId: f.projectId, kind: "runner", boundId: jobId });
      const home = mkdtempSync(join(tmpdir(), "dstack-runner-home-"));
      const more = typeof extra === "function" ? extra(jobId) : extra;
      writeFileSync(join(home, "bootstrap.json"), JSON.stringify({ joinToken: token, agentUrl: agentUrl(port), caCertificatePem: f.mesh.ca.certPem, ...more }));
      return { jobId, home };
    },
    finalState(jobId, timeoutMs = 60_000) {
      const done = (heard.get(jobId) ?? []).find((s) => FINAL.has(s.state));
      if (done) return Promise.resolve(done);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no final state of job ${jobId} within ${timeoutMs} ms; heard ${JSON.stringify((heard.get(jobId) ?? []).map((s) => JobState[s.state]))}`)), timeoutMs);
        waiters.push({ jobId, resolve: (s) => (clearTimeout(t), resolve(s)) });
      });
    },
    heard: (jobId) => heard.get(jobId) ?? [],
    report: (jobId) => (f.mesh.links.runner(jobId).stateReport as RunnerStateReport | null) ?? null,
    cleanup: () => f.cleanup(),
  };
}

/** Distinct states in the order first heard (a reconnect's state report repeats earlier ones). */
export const stateNames = (list: JobStateChanged[]): string[] => [...new Set(list.map((s) => JobState[s.state]))];
