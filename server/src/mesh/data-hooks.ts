// What the mesh's data plane (logs.ts, code.ts) needs from the rest of the server, as two hooks,
// so mesh/ never reaches into the services; and the default adapters over LogsService and
// CodeService that dstack-server passes in.
import type { Orm } from "../db/database.js";
import { Job } from "../db/entities.js";
import type { CodeService } from "../services/code.js";
import type { LogsService, LogStream, NewLogEntry } from "../services/logs.js";
import { meshErr } from "./errors.js";

export type MeshLogSource = "stdout" | "stderr" | "runner";

export interface MeshLogEntry {
  timestamp: Date;
  stream: MeshLogSource;
  data: Uint8Array;
}

export interface MeshDataHooks {
  /**
   * Stores the entries numbered `firstSequence`, `firstSequence + 1`, … (0-based, one numbering
   * per job submission across stdout, stderr and runner) that are not stored yet, and returns
   * next_sequence: how many entries are now stored contiguously from 0. A batch that starts
   * beyond next_sequence stores nothing and gets the current value back; an empty batch just
   * reads it. The mesh never runs two calls for one job at the same time.
   */
  appendLogs(jobSubmissionId: string, firstSequence: number, entries: readonly MeshLogEntry[]): Promise<number>;
  /** The blob `sha256` (lowercase hex) if the job may read it (its run uses it, its project holds it); null otherwise. */
  readCode(jobSubmissionId: string, sha256: string): Promise<Uint8Array | null>;
}

/** Jobs whose project and log position the adapter remembers; older ones are looked up again. */
const CACHE_LIMIT = 10_000;

interface JobLogState {
  projectId: string;
  /** Wire next_sequence: the LogsService numbers entries from 1, so this is also its last stored sequence. */
  next: number;
}

/** Hashes of the blobs a run spec names: the repo code and the `files:` archives. */
function runBlobHashes(runSpec: Record<string, unknown>): Set<string> {
  const out = new Set<string>();
  const add = (h: unknown) => typeof h === "string" && h && out.add(h.toLowerCase());
  add(runSpec.repoCodeHash);
  const extra = (runSpec.extra ?? {}) as Record<string, unknown>;
  for (const list of [runSpec.fileArchives, extra.fileArchives]) {
    if (Array.isArray(list)) for (const a of list) add((a as { archiveHash?: unknown } | null)?.archiveHash);
  }
  return out;
}

/**
 * The default hooks. Logs: stdout and stderr go to the job log, runner entries to the runner
 * log; the wire's 0-based sequence s is the LogsService's s + 1. A batch is written as runs of
 * one stream, in order, so what is stored is always a prefix of the job's entries, even after
 * a crash between two files: next_sequence is then the larger last sequence of the two logs.
 */
export function meshDataHooks(orm: Orm, services: { logs: Pick<LogsService, "append">; code: Pick<CodeService, "get"> }): MeshDataHooks {
  const jobs = new Map<string, JobLogState>();

  async function logState(id: string): Promise<JobLogState> {
    const hit = jobs.get(id);
    if (hit) return hit;
    const job = await orm.em.fork().findOne(Job, { id }, { populate: ["run"] });
    if (!job) throw meshErr("MESH_NOT_FOUND", { what: "Job submission", id });
    const projectId = job.run.getEntity().project.id;
    // An empty append reads the last stored sequence (loading it from the file after a restart).
    const [j, r] = await Promise.all((["job", "runner"] as const).map((s) => services.logs.append(id, 1, [], s, projectId)));
    const st = { projectId, next: Math.max(j!, r!) };
    if (jobs.size >= CACHE_LIMIT) jobs.delete(jobs.keys().next().value!);
    jobs.set(id, st);
    return st;
  }

  return {
    async appendLogs(id, first, entries) {
      const st = await logState(id);
      if (first > st.next) return st.next;
      const fresh = entries.slice(st.next - first);
      try {
        for (let i = 0; i < fresh.length; ) {
          const stream: LogStream = fresh[i]!.stream === "runner" ? "runner" : "job";
          let end = i + 1;
          while (end < fresh.length && (fresh[end]!.stream === "runner") === (stream === "runner")) end++;
          const run: NewLogEntry[] = fresh.slice(i, end).map((e) => ({ timestamp: e.timestamp, source: e.stream, message: e.data }));
          // Wire sequence st.next is the LogsService's st.next + 1.
          await services.logs.append(id, st.next + 1, run, stream, st.projectId);
          st.next += run.length;
          i = end;
        }
      } catch (e) {
        jobs.delete(id); // what is stored is uncertain now: read it again next time
        throw e;
      }
      return st.next;
    },

    async readCode(id, sha256) {
      const job = await orm.em.fork().findOne(Job, { id }, { populate: ["run"] });
      if (!job) return null;
      const run = job.run.getEntity();
      if (!runBlobHashes(run.runSpec).has(sha256.toLowerCase())) return null;
      return services.code.get(run.project.id, sha256);
    },
  };
}
