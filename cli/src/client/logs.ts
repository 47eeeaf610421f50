// Following a job's logs across everything that can happen while a run lives: the stream
// breaking (server restart, network), the job being retried as a new submission (logs are
// per submission), and the run waiting between retries. The follower is written against a
// small `LogSource` interface so the same logic runs over the real API and a fake in tests.
import { DstackError } from "./errors.js";

export type LogStreamName = "stdout" | "stderr" | "runner";

export interface LogEntry {
  timestamp: Date;
  source: LogStreamName;
  /** Raw bytes: not necessarily whole lines or valid UTF-8. */
  message: Uint8Array;
}

export interface LogBatch {
  entries: LogEntry[];
  /** The job submission has finished and every stored entry was sent. */
  finished: boolean;
  /** Which submission the entries belong to. */
  submissionId: string;
}

export interface LogSource {
  /** One FollowLogs stream: `submissionId` undefined = the job's latest submission. */
  follow(req: { submissionId?: string; since?: Date }, signal: AbortSignal): AsyncIterable<LogBatch>;
  /**
   * Resolves once the run has finished ("finished") or the job's latest submission is not
   * `current` (a retry started); waits for that as long as neither is true.
   */
  nextSubmission(current: string | undefined, signal: AbortSignal): Promise<{ submissionId: string } | "finished">;
  /** Whether a failed call is worth retrying (network, server restarting). */
  isTransient(error: unknown): boolean;
}

export interface FollowOptions {
  /** Only entries at or after this time. */
  since?: Date;
  signal?: AbortSignal;
  /** Consecutive failed reconnects before giving up; default 10. */
  maxRetries?: number;
  /** Waits between reconnects; tests pass one that returns at once. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Yields the job's log entries, oldest first, until the run finishes. A broken stream is
 * resumed from the last entry's timestamp without repeating entries; a retry's new submission
 * is followed from its start.
 */
export async function* followLogs(source: LogSource, opts: FollowOptions = {}): AsyncGenerator<LogEntry> {
  const signal = opts.signal ?? new AbortController().signal;
  const sleep = opts.sleep ?? abortableSleep;
  const maxRetries = opts.maxRetries ?? 10;
  let submission: string | undefined;
  let submissionDone = false;
  // Resume point within the current submission: the last timestamp seen and how many entries
  // carried it (entries may share a timestamp; `since` is inclusive).
  let lastTs: number | undefined;
  let seenAtLastTs = 0;
  let failures = 0;

  const startNewSubmission = (id: string | undefined) => {
    submission = id;
    submissionDone = false;
    lastTs = undefined;
    seenAtLastTs = 0;
  };

  while (!signal.aborted) {
    if (submissionDone) {
      let next: Awaited<ReturnType<LogSource["nextSubmission"]>>;
      try {
        next = await source.nextSubmission(submission, signal);
      } catch (e) {
        if (signal.aborted) return;
        if (!source.isTransient(e) || ++failures > maxRetries) throw e;
        await sleep(backoff(failures), signal);
        continue;
      }
      if (next === "finished") return;
      startNewSubmission(next.submissionId);
    }
    let skipAtLastTs = seenAtLastTs;
    const since = lastTs !== undefined ? new Date(lastTs) : opts.since;
    try {
      for await (const batch of source.follow({ ...(submission ? { submissionId: submission } : {}), ...(since ? { since } : {}) }, signal)) {
        failures = 0;
        if (batch.submissionId && submission === undefined) submission = batch.submissionId;
        for (const entry of batch.entries) {
          if (signal.aborted) return;
          const t = entry.timestamp.getTime();
          if (lastTs !== undefined && t < lastTs) continue;
          if (lastTs !== undefined && t === lastTs && skipAtLastTs > 0) {
            skipAtLastTs--;
            continue;
          }
          if (t === lastTs) seenAtLastTs++;
          else {
            lastTs = t;
            seenAtLastTs = 1;
            skipAtLastTs = 0;
          }
          yield entry;
        }
        if (batch.finished) {
          submissionDone = true;
          break;
        }
      }
      // A stream that ends without `finished` was cut short (server shutting down): resume.
      if (!submissionDone && !signal.aborted) {
        if (++failures > maxRetries) throw new Error("The log stream keeps ending before the job finishes.");
        await sleep(backoff(failures), signal);
      }
    } catch (e) {
      if (signal.aborted) return;
      if (!source.isTransient(e) || ++failures > maxRetries) throw e;
      await sleep(backoff(failures), signal);
    }
  }
}

/** 0.5 s, 1 s, 2 s, then 5 s between reconnects. */
function backoff(attempt: number): number {
  return Math.min(500 * 2 ** (attempt - 1), 5000);
}

/** Parses `--since`: a duration back from now (`30s`, `10m`, `2h`, `1d`, `1w`) or an RFC 3339 time. */
export function parseSince(value: string, now: Date = new Date()): Date {
  const m = /^(\d+)\s*(s|m|h|d|w)$/.exec(value.trim());
  if (m) {
    const unit = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2] as "s" | "m" | "h" | "d" | "w"];
    return new Date(now.getTime() - Number(m[1]) * unit * 1000);
  }
  if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(value.trim())) {
    const d = new Date(value.trim());
    if (!Number.isNaN(d.getTime())) return d;
  }
  throw new DstackError("usage", `Invalid --since '${value}': use a duration such as 10s, 5m, 2h, 1d, or an RFC 3339 time such as 2024-09-24T15:30:00Z.`);
}
