// `dstack ui`: the dashboard's data and side effects, without Ink. It keeps the runs live from
// the server's run watch (reopened after an error, with a growing pause), follows the selected
// run's logs, polls the fleets while their view is open, stops runs, and turns keys into state
// through state.ts. The Ink app (app.tsx) only draws `getState()` and hands keys to `key()`.
import type { Fleet, Run, WatchRunsResponse } from "@dstack/proto/api";
import type { LogEntry } from "../client/logs.js";
import { handleKey, initialState, reduce, type Action, type Effect, type KeyInfo, type UiState } from "./state.js";

/** What the dashboard uses of `Client` (tests pass a fake). */
export interface UiClient {
  readonly serverUrl: string;
  readonly project: string;
  runs: {
    watch(names?: string[], opts?: { signal?: AbortSignal; includeJobs?: boolean }): AsyncIterable<WatchRunsResponse>;
    logs(name: string, opts: { follow: true; signal: AbortSignal }): AsyncIterable<LogEntry>;
    stop(names: string | string[], abort?: boolean): Promise<void>;
  };
  fleets: { list(): Promise<Fleet[]> };
}

export interface DashboardOptions {
  /** First pause before reopening the run watch after an error; doubles up to maxRetryMs. */
  retryMs?: number;
  maxRetryMs?: number;
  /** How often the fleets view reloads. */
  fleetsEveryMs?: number;
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ").trim();

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

export class Dashboard {
  private state: UiState = initialState();
  private readonly listeners = new Set<() => void>();
  private readonly quitListeners = new Set<() => void>();
  private readonly ac = new AbortController();
  private logsAc: AbortController | undefined;
  private fleetsAc: AbortController | undefined;
  private started = false;
  private readonly retryMs: number;
  private readonly maxRetryMs: number;
  private readonly fleetsEveryMs: number;
  /** Lines a page key scrolls (the app sets it from the terminal's height). */
  pageSize = 10;

  constructor(
    readonly client: UiClient,
    opts: DashboardOptions = {},
  ) {
    this.retryMs = opts.retryMs ?? 1000;
    this.maxRetryMs = opts.maxRetryMs ?? 10_000;
    this.fleetsEveryMs = opts.fleetsEveryMs ?? 3000;
  }

  // Arrow properties: React's useSyncExternalStore calls them unbound.
  getState = (): UiState => this.state;

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** Called once when the user quits (q, Ctrl-C). */
  onQuit(listener: () => void): () => void {
    this.quitListeners.add(listener);
    return () => this.quitListeners.delete(listener);
  }

  get closed(): boolean {
    return this.ac.signal.aborted;
  }

  dispatch(action: Action): void {
    if (this.closed) return;
    const next = reduce(this.state, action);
    if (next === this.state) return;
    this.state = next;
    for (const l of this.listeners) l();
  }

  /** Starts the run watch. */
  start(): void {
    if (this.started) return;
    this.started = true;
    void this.watchRuns();
  }

  /** Stops every stream and timer. */
  close(): void {
    this.logsAc?.abort();
    this.fleetsAc?.abort();
    this.ac.abort();
  }

  key(input: string, key: KeyInfo & { meta?: boolean }): void {
    if (this.closed) return;
    // Keys typed faster than a frame (or pasted) come as one string: each is a key.
    if (input.length > 1 && !key.ctrl && !key.meta && !key.escape && /^[\x20-\x7e]+$/.test(input)) {
      for (const ch of input) this.key(ch, {});
      return;
    }
    const { state, effects } = handleKey(this.state, input, key, this.pageSize);
    if (state !== this.state) {
      this.state = state;
      for (const l of this.listeners) l();
    }
    for (const e of effects) this.run(e);
  }

  private run(effect: Effect): void {
    switch (effect.type) {
      case "quit":
        this.close();
        for (const l of this.quitListeners) l();
        return;
      case "follow-logs":
        this.followLogs(effect.run);
        return;
      case "unfollow-logs":
        this.logsAc?.abort();
        this.logsAc = undefined;
        return;
      case "stop": {
        const what = effect.abort ? "Abort" : "Stop";
        this.client.runs.stop(effect.run, effect.abort).then(
          () => this.dispatch({ type: "status", text: `${what} requested for ${effect.run}.` }),
          (e: unknown) => this.dispatch({ type: "status", text: `${what} ${effect.run}: ${message(e)}`, error: true }),
        );
        return;
      }
      case "watch-fleets":
        this.watchFleets();
        return;
      case "unwatch-fleets":
        this.fleetsAc?.abort();
        this.fleetsAc = undefined;
        return;
    }
  }

  /** The run watch: the current state as one snapshot, then each change; reopened after errors. */
  private async watchRuns(): Promise<void> {
    const signal = this.ac.signal;
    let delay = this.retryMs;
    let failed: string | undefined;
    while (!signal.aborted) {
      try {
        let live = false;
        const initial: Run[] = [];
        for await (const u of this.client.runs.watch([], { signal, includeJobs: true })) {
          if (signal.aborted) return;
          if (!live) {
            if (u.run) initial.push(u.run);
            if (!u.initialStateSent) continue;
            live = true;
            delay = this.retryMs;
            this.dispatch({ type: "runs-snapshot", runs: initial });
            if (failed) this.dispatch({ type: "clear-status", ifText: failed });
            failed = undefined;
            continue;
          }
          if (u.run) this.dispatch({ type: "run-update", run: u.run });
        }
        if (signal.aborted) return;
        throw new Error("the server closed the run watch");
      } catch (e) {
        if (signal.aborted) return;
        failed = `Runs: ${message(e)} (retrying in ${Math.round(delay / 100) / 10} s)`;
        this.dispatch({ type: "status", text: failed, error: true });
        await sleep(delay, signal);
        delay = Math.min(delay * 2, this.maxRetryMs);
      }
    }
  }

  private followLogs(run: string): void {
    this.logsAc?.abort();
    const ac = new AbortController();
    this.logsAc = ac;
    void (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const e of this.client.runs.logs(run, { follow: true, signal: ac.signal })) {
          if (ac.signal.aborted) return;
          const text = decoder.decode(e.message, { stream: true });
          if (text) this.dispatch({ type: "log-text", run, text });
        }
        if (ac.signal.aborted) return;
        const rest = decoder.decode();
        if (rest) this.dispatch({ type: "log-text", run, text: rest });
        this.dispatch({ type: "log-end", run });
      } catch (e) {
        if (ac.signal.aborted) return;
        this.dispatch({ type: "log-end", run, error: message(e) });
      }
    })();
  }

  private watchFleets(): void {
    this.fleetsAc?.abort();
    const ac = new AbortController();
    this.fleetsAc = ac;
    void (async () => {
      let failed: string | undefined;
      while (!ac.signal.aborted) {
        try {
          const fleets = await this.client.fleets.list();
          if (ac.signal.aborted) return;
          this.dispatch({ type: "fleets", fleets });
          if (failed) this.dispatch({ type: "clear-status", ifText: failed });
          failed = undefined;
        } catch (e) {
          if (ac.signal.aborted) return;
          failed = `Fleets: ${message(e)}`;
          this.dispatch({ type: "status", text: failed, error: true });
        }
        await sleep(this.fleetsEveryMs, ac.signal);
      }
    })();
  }
}
