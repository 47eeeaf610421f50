// Job and runner logs, per job submission, as append-only JSON-lines files in the server
// home (`logs/<submission id>/{job,runner}.jsonl`). Every entry carries the sender's sequence
// number, so a batch re-sent after a reconnect is acknowledged but not stored twice. Readers
// follow the file itself (by byte offset), never an in-memory buffer, so a reader slower
// than the writer falls behind but never loses a line.
import { mkdir, open, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { JobStatus } from "../domain/enums.js";
import type { Orm } from "../db/database.js";
import { Job, Run } from "../db/entities.js";
import { err } from "../errors.js";
import type { EventBus } from "../scheduler/events.js";
import { isJobFinished } from "./state-machines.js";
import type { ProjectsService } from "./projects.js";
import type { Principal } from "./users.js";

export type LogSource = "stdout" | "stderr" | "runner";
export type LogStream = "job" | "runner";

export interface LogEntry {
  seq: number;
  timestamp: Date;
  source: LogSource;
  message: Buffer;
}

export interface NewLogEntry {
  timestamp: Date;
  source: LogSource;
  message: Uint8Array;
}

export interface PollQuery {
  startTime?: Date;
  endTime?: Date;
  descending?: boolean;
  /** Default 100, at most 1000. */
  limit?: number;
  nextToken?: string;
  /** The runner's diagnostic log instead of the job's output. */
  diagnose?: boolean;
}

interface FileState {
  lastSeq: number;
  /** Serializes appends to one file. */
  tail: Promise<unknown>;
}

type Line = { q: number; t: number; s: LogSource; m: string };

const parse = (text: string): LogEntry[] =>
  text
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => {
      const x = JSON.parse(l) as Line;
      return { seq: x.q, timestamp: new Date(x.t), source: x.s, message: Buffer.from(x.m, "base64") };
    });

export class LogsService {
  private readonly files = new Map<string, FileState>();

  constructor(
    private readonly orm: Orm,
    private readonly projects: ProjectsService,
    private readonly bus: EventBus,
    private readonly homeDir: string,
  ) {}

  private path(submissionId: string, stream: LogStream): string {
    if (!/^[0-9a-f-]{36}$/.test(submissionId)) throw err("DSTACK_JOB_NOT_FOUND", { job: submissionId });
    return join(this.homeDir, "logs", submissionId, `${stream}.jsonl`);
  }

  private async state(file: string): Promise<FileState> {
    let s = this.files.get(file);
    if (!s) {
      let lastSeq = 0;
      try {
        const entries = parse(await readFile(file, "utf8"));
        lastSeq = entries.length ? entries[entries.length - 1]!.seq : 0;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
      s = this.files.get(file) ?? { lastSeq, tail: Promise.resolve() };
      this.files.set(file, s);
    }
    return s;
  }

  /**
   * Stores entries numbered firstSeq, firstSeq+1, …; those at or below the last stored
   * sequence are duplicates of an earlier batch and skipped. Returns the acknowledged sequence.
   */
  async append(submissionId: string, firstSeq: number, entries: readonly NewLogEntry[], stream: LogStream = "job", projectId = ""): Promise<number> {
    const file = this.path(submissionId, stream);
    const s = await this.state(file);
    const work = s.tail.then(async () => {
      const fresh = entries.map((e, i) => ({ e, q: firstSeq + i })).filter((x) => x.q > s.lastSeq);
      if (fresh.length === 0) return s.lastSeq;
      if (fresh[0]!.q !== s.lastSeq + 1 && s.lastSeq !== 0) {
        // A gap means the sender skipped entries; store what came, numbered as sent.
      }
      const text = fresh.map((x) => JSON.stringify({ q: x.q, t: x.e.timestamp.getTime(), s: x.e.source, m: Buffer.from(x.e.message).toString("base64") }) + "\n").join("");
      await mkdir(join(this.homeDir, "logs", submissionId), { recursive: true });
      const fh = await open(file, "a");
      try {
        await fh.write(text);
      } finally {
        await fh.close();
      }
      s.lastSeq = fresh[fresh.length - 1]!.q;
      return s.lastSeq;
    });
    s.tail = work.catch(() => undefined);
    const acked = await work;
    this.bus.publish({ kind: "log", id: submissionId, projectId });
    return acked;
  }

  private async readAll(submissionId: string, stream: LogStream): Promise<LogEntry[]> {
    try {
      return parse(await readFile(this.path(submissionId, stream), "utf8"));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw e;
    }
  }

  /** One page of stored events; `nextToken` continues after the last one returned. */
  async poll(submissionId: string, q: PollQuery = {}): Promise<{ entries: LogEntry[]; nextToken: string }> {
    const limit = Math.min(Math.max(q.limit || 100, 1), 1000);
    let all = await this.readAll(submissionId, q.diagnose ? "runner" : "job");
    if (q.startTime) all = all.filter((e) => e.timestamp >= q.startTime!);
    if (q.endTime) all = all.filter((e) => e.timestamp < q.endTime!);
    if (q.descending) all.reverse();
    if (q.nextToken) {
      const after = Number(q.nextToken);
      if (!Number.isInteger(after)) throw err("DSTACK_BAD_PAGE_TOKEN");
      all = all.filter((e) => (q.descending ? e.seq < after : e.seq > after));
    }
    const page = all.slice(0, limit);
    return { entries: page, nextToken: all.length > limit ? String(page[page.length - 1]!.seq) : "" };
  }

  /**
   * Stored events from `since`, then new ones as they are appended, in batches; ends once
   * the job submission has finished and everything stored was sent.
   */
  async *follow(submissionId: string, opts: { since?: Date; diagnose?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<{ entries: LogEntry[]; finished: boolean }> {
    const file = this.path(submissionId, opts.diagnose ? "runner" : "job");
    let offset = 0;
    let pending = "";
    let notified = false;
    let wake: (() => void) | null = null;
    const unsubscribe = this.bus.subscribe((e) => {
      if ((e.kind === "log" || e.kind === "job") && e.id === submissionId) {
        notified = true;
        wake?.();
      }
    });
    const onAbort = () => wake?.();
    opts.signal?.addEventListener("abort", onAbort);
    try {
      while (!opts.signal?.aborted) {
        notified = false;
        // Read whatever was appended since the last read, straight from the file.
        let size = 0;
        try {
          size = (await stat(file)).size;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
        }
        if (size > offset) {
          const fh = await open(file, "r");
          try {
            const buf = Buffer.alloc(size - offset);
            await fh.read(buf, 0, buf.length, offset);
            offset = size;
            pending += buf.toString("utf8");
          } finally {
            await fh.close();
          }
          const cut = pending.lastIndexOf("\n");
          if (cut >= 0) {
            let entries = parse(pending.slice(0, cut + 1));
            pending = pending.slice(cut + 1);
            if (opts.since) entries = entries.filter((e) => e.timestamp >= opts.since!);
            if (entries.length) yield { entries, finished: false };
          }
          continue;
        }
        if (await this.isFinished(submissionId)) {
          // One last look: entries appended between the read and the status check.
          if ((await stat(file).catch(() => ({ size: 0 }))).size > offset) continue;
          yield { entries: [], finished: true };
          return;
        }
        if (!notified) await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      unsubscribe();
      opts.signal?.removeEventListener("abort", onAbort);
    }
  }

  private async isFinished(submissionId: string): Promise<boolean> {
    const job = await this.orm.em.fork().findOne(Job, { id: submissionId }, { fields: ["status"] });
    return !job || isJobFinished(job.status);
  }

  /** The submission a client means: explicit id, or the latest of (replica, job) of the run. */
  async resolveSubmission(actor: Principal, projectName: string, runName: string, by: { jobSubmissionId?: string; replicaNum?: number; jobNum?: number }): Promise<string> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.list");
    const run = await em.findOne(Run, { project: project.id, runName, deleted: false }, { orderBy: { submittedAt: "desc" } });
    if (!run) throw err("DSTACK_RUN_NOT_FOUND", { run: runName, project: projectName });
    const job = by.jobSubmissionId
      ? await em.findOne(Job, { id: by.jobSubmissionId, run: run.id })
      : await em.findOne(Job, { run: run.id, replicaNum: by.replicaNum ?? 0, jobNum: by.jobNum ?? 0 }, { orderBy: { submissionNum: "desc" } });
    if (!job) throw err("DSTACK_JOB_NOT_FOUND", { job: by.jobSubmissionId ?? `${runName} replica ${by.replicaNum ?? 0} job ${by.jobNum ?? 0}` });
    return job.id;
  }
}

export { JobStatus };
