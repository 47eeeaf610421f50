// A fake of what `dstack ui` uses of Client: a run watch fed by the test, logs per run, fleets.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { FleetSchema, FleetStatus, InstanceStatus, JobStatus, RunSchema, RunStatus, WatchRunsResponseSchema, type Fleet, type Run, type WatchRunsResponse } from "@dstack/proto/api";
import type { LogEntry } from "../../client/logs.js";
import type { UiClient } from "../controller.js";

const T0 = Date.parse("2026-01-01T12:00:00Z");

export function fakeRun(name: string, status: RunStatus, minutesAgo = 1, extra: { deleted?: boolean } = {}): Run {
  const jobStatus = status === RunStatus.RUNNING ? JobStatus.RUNNING : status === RunStatus.DONE ? JobStatus.DONE : status === RunStatus.TERMINATED ? JobStatus.TERMINATED : JobStatus.SUBMITTED;
  const sub = { id: `${name}-s`, status: jobStatus, submittedAt: timestampFromDate(new Date(T0 - minutesAgo * 60_000)) };
  return create(RunSchema, {
    id: `id-${name}`,
    projectName: "main",
    status,
    submittedAt: timestampFromDate(new Date(T0 - minutesAgo * 60_000)),
    runSpec: { runName: name },
    jobs: [{ jobSpec: { jobName: `${name}-0-0` }, jobSubmissions: [sub] }],
    latestJobSubmission: sub,
    deleted: extra.deleted ?? false,
  });
}

export function fakeFleet(name: string): Fleet {
  return create(FleetSchema, { name, status: FleetStatus.ACTIVE, instances: [{ instanceNum: 0, status: InstanceStatus.IDLE, sshHost: "10.0.0.7" }] });
}

/** An async queue: push values, end, or fail; iterate once. Ends quietly when `signal` aborts. */
export class Feed<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private waiters: (() => void)[] = [];
  private ended = false;
  private error: unknown;
  constructor(private readonly signal?: AbortSignal) {
    signal?.addEventListener("abort", () => this.wake());
  }
  push(v: T) {
    this.items.push(v);
    this.wake();
  }
  end() {
    this.ended = true;
    this.wake();
  }
  fail(e: unknown) {
    this.error = e;
    this.wake();
  }
  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.signal?.aborted) return;
      const v = this.items.shift();
      if (v !== undefined) {
        yield v;
        continue;
      }
      if (this.error !== undefined) throw this.error;
      if (this.ended) return;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
}

export class FakeClient implements UiClient {
  readonly serverUrl = "http://127.0.0.1:3000";
  readonly project = "main";
  /** One feed per watch opened, newest last. */
  watches: Feed<WatchRunsResponse>[] = [];
  logFeeds = new Map<string, Feed<LogEntry>>();
  stops: { names: string | string[]; abort: boolean }[] = [];
  fleetList: Fleet[] = [];
  fleetCalls = 0;
  stopError: Error | undefined;

  runs = {
    watch: (_names: string[] = [], opts: { signal?: AbortSignal } = {}) => {
      const feed = new Feed<WatchRunsResponse>(opts.signal);
      this.watches.push(feed);
      return feed;
    },
    logs: (name: string, opts: { signal: AbortSignal }) => {
      const feed = new Feed<LogEntry>(opts.signal);
      this.logFeeds.set(name, feed);
      return feed;
    },
    stop: async (names: string | string[], abort = false) => {
      if (this.stopError) throw this.stopError;
      this.stops.push({ names, abort });
    },
  };

  fleets = {
    list: async () => {
      this.fleetCalls++;
      return this.fleetList;
    },
  };

  /** Sends the current state (runs, then initial_state_sent) on the newest watch. */
  snapshot(runs: Run[]) {
    const w = this.watches.at(-1)!;
    for (const run of runs) w.push(create(WatchRunsResponseSchema, { run }));
    w.push(create(WatchRunsResponseSchema, { initialStateSent: true }));
  }

  update(run: Run) {
    this.watches.at(-1)!.push(create(WatchRunsResponseSchema, { run }));
  }

  log(name: string, text: string) {
    this.logFeeds.get(name)!.push({ timestamp: new Date(), source: "stdout", message: new TextEncoder().encode(text) });
  }
}

/** Resolves once `check` stops throwing (or fails after `ms`). */
export async function eventually(check: () => void, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      check();
      return;
    } catch (e) {
      if (Date.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
