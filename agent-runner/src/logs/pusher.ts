// Ships a job submission's log to the server over LogService.Push without losing or doubling
// entries across cuts, reconnects and runner restarts.
//
// Every entry gets the next sequence number (0-based per job submission) and goes to the spool
// before it is sent. An entry leaves at once when nothing is awaiting an ack; otherwise entries
// gather into a batch that leaves on the ack, once `flushBytes` wait, or after `flushMs`. The server answers
// with next_sequence (entries stored contiguously from 0); everything below it is dropped here.
// After a cut the pusher redials with full-jitter backoff and resends everything unacked; the
// server skips sequences it already has.
//
// Bound: at most `maxUnackedBytes` of unacknowledged output is kept. Beyond it NEW output is
// dropped (never numbered), not old: the server's ack is "contiguous from 0", so a hole in the
// middle would stall every later entry. Once acks free half the space, a RUNNER entry says how
// much was lost.
import { EventEmitter } from "node:events";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Transport } from "@connectrpc/connect";
import { LogEntrySchema, LogService, LogStream, PushRequestSchema, type LogEntry, type PushRequest } from "@dstack/proto/agent";
import { AsyncQueue, backoffDelay, type BackoffOptions } from "@dstack/proto/link";
import { MAX_ENTRY_BYTES } from "./splitter.js";
import { LogSpool } from "./spool.js";

export interface LogPusherOptions {
  jobSubmissionId: string;
  /** Where the spool lives (survives a runner restart in the same home). */
  dir: string;
  /** A fresh connection per attempt (the certificate may have been renewed meanwhile). */
  connect(): { transport: Transport; close(): void };
  /** Longest wait before a batch leaves; default 20 ms. */
  flushMs?: number;
  /** Bytes waiting that make a batch leave at once; default 64 KiB. */
  flushBytes?: number;
  /** Largest batch; default 960 KiB (LogBatch is at most 1 MiB). */
  maxBatchBytes?: number;
  /** Unacknowledged bytes kept before new output is dropped; default 64 MiB. */
  maxUnackedBytes?: number;
  backoff?: Partial<BackoffOptions>;
}

export const LOG_PUSHER_DEFAULTS = {
  flushMs: 20,
  flushBytes: 64 * 1024,
  maxBatchBytes: 960 * 1024,
  maxUnackedBytes: 64 * 1024 * 1024,
  backoff: { initialMs: 500, maxMs: 10_000 },
} as const;

interface Pending {
  seq: number;
  entry: LogEntry;
  size: number;
}

export interface LogPusherEvents {
  /** The server has stored everything below `next`. */
  acked: [next: number];
  /** A Push stream failed or could not open; the pusher redials. */
  error: [error: unknown];
  /** Output was dropped because the unacked bound was reached (first drop of a run). */
  overflow: [droppedBytes: number];
}

export class LogPusher extends EventEmitter<LogPusherEvents> {
  private readonly spool: LogSpool;
  private entries: Pending[] = [];
  private unackedBytes = 0;
  private nextSeqValue: number;
  private ackedValue: number;
  /** Next sequence to send on the current stream. */
  private sent = 0;
  private waitingBytes = 0;
  private out: AsyncQueue<PushRequest> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastTsMs = 0;
  private dropped = { bytes: 0, entries: 0 };
  private lastStateSave = 0;
  private readonly stop = new AbortController();
  private loop: Promise<void> | null = null;
  private drainWaiters: (() => void)[] = [];
  private readonly cfg: Required<Omit<LogPusherOptions, "jobSubmissionId" | "dir" | "connect" | "backoff">> & { backoff: BackoffOptions };

  constructor(private readonly o: LogPusherOptions) {
    super();
    this.on("error", () => {}); // reported, never fatal
    this.cfg = {
      flushMs: o.flushMs ?? LOG_PUSHER_DEFAULTS.flushMs,
      flushBytes: o.flushBytes ?? LOG_PUSHER_DEFAULTS.flushBytes,
      maxBatchBytes: o.maxBatchBytes ?? LOG_PUSHER_DEFAULTS.maxBatchBytes,
      maxUnackedBytes: o.maxUnackedBytes ?? LOG_PUSHER_DEFAULTS.maxUnackedBytes,
      backoff: { ...LOG_PUSHER_DEFAULTS.backoff, ...o.backoff },
    };
    this.spool = new LogSpool(o.dir, o.jobSubmissionId);
    this.ackedValue = this.spool.acked;
    for (const r of this.spool.recovered) this.track({ seq: r.seq, entry: r.entry, size: r.entry.data.length });
    this.nextSeqValue = Math.max(this.ackedValue, (this.entries.at(-1)?.seq ?? -1) + 1);
    for (const e of this.entries) this.lastTsMs = Math.max(this.lastTsMs, tsMs(e.entry));
  }

  /** Sequence the next entry gets (= entries produced so far). */
  get nextSequence(): number {
    return this.nextSeqValue;
  }

  /** What the server has acknowledged. */
  get acked(): number {
    return this.ackedValue;
  }

  get unacked(): number {
    return this.entries.length;
  }

  get droppedBytes(): number {
    return this.dropped.bytes;
  }

  start(): this {
    this.loop ??= this.run();
    return this;
  }

  /** Adds output; false when it was dropped (over the unacked bound) or the pusher is closed. */
  append(stream: LogStream, data: Uint8Array): boolean {
    if (this.stop.signal.aborted) return false;
    for (let i = 0; i < data.length; i += MAX_ENTRY_BYTES) {
      const piece = data.subarray(i, i + MAX_ENTRY_BYTES);
      if (this.unackedBytes + piece.length > this.cfg.maxUnackedBytes) {
        if (this.dropped.bytes === 0) this.emit("overflow", data.length - i);
        this.dropped.bytes += data.length - i;
        this.dropped.entries++;
        return false;
      }
      this.add(stream, piece);
    }
    return true;
  }

  /** Resolves true once everything appended so far is acknowledged, false after `timeoutMs`. */
  drain(timeoutMs: number): Promise<boolean> {
    this.flush();
    if (this.entries.length === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(t);
        this.drainWaiters = this.drainWaiters.filter((w) => w !== waiter);
        resolve(ok);
      };
      const waiter = () => done(true);
      const t = setTimeout(() => done(false), timeoutMs);
      this.drainWaiters.push(waiter);
    });
  }

  async close(): Promise<void> {
    if (this.stop.signal.aborted) return this.loop ?? undefined;
    if (this.timer) clearTimeout(this.timer);
    this.stop.abort();
    await this.loop;
    this.spool.saveState(this.ackedValue);
    this.spool.close();
  }

  private add(stream: LogStream, data: Uint8Array): void {
    // Strictly increasing millisecond timestamps (distinct up to 1000 entries/s, as dstack's runner).
    const ms = Math.max(Date.now(), this.lastTsMs + 1);
    this.lastTsMs = ms;
    const entry = create(LogEntrySchema, { timestamp: timestampFromMs(ms), stream, data: Uint8Array.from(data) });
    const seq = this.nextSeqValue++;
    this.spool.append(seq, entry);
    this.track({ seq, entry, size: data.length });
    this.waitingBytes += data.length;
    // Nothing on the wire: send now (a lone line reaches the server at once). Otherwise output
    // gathers until the ack comes back, `flushBytes` wait, or `flushMs` pass: batches grow with load.
    if (this.waitingBytes >= this.cfg.flushBytes || !this.inFlight()) this.flush();
    else if (!this.timer) this.timer = setTimeout(() => this.flush(), this.cfg.flushMs);
  }

  /** Some sent entries still wait for their ack. */
  private inFlight(): boolean {
    return this.out !== null && this.sent > this.ackedValue;
  }

  private track(p: Pending): void {
    this.entries.push(p);
    this.unackedBytes += p.size;
  }

  /** Sends everything not yet sent on the current stream, in batches. */
  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.waitingBytes = 0;
    const out = this.out;
    if (!out) return;
    const first = this.entries[0]?.seq ?? this.nextSeqValue;
    let i = Math.max(0, this.sent - first);
    while (i < this.entries.length) {
      const batch: LogEntry[] = [];
      const firstSequence = this.entries[i]!.seq;
      let bytes = 0;
      while (i < this.entries.length && (batch.length === 0 || bytes + this.entries[i]!.size + 64 <= this.cfg.maxBatchBytes)) {
        batch.push(this.entries[i]!.entry);
        bytes += this.entries[i]!.size + 64;
        i++;
      }
      out.push(create(PushRequestSchema, { batch: { jobSubmissionId: this.o.jobSubmissionId, firstSequence: BigInt(firstSequence), entries: batch } }));
    }
    this.sent = this.nextSeqValue;
  }

  private onAck(next: number): void {
    if (next > this.nextSeqValue) return this.renumberFrom(next);
    if (next <= this.ackedValue) return;
    this.ackedValue = next;
    let n = 0;
    while (n < this.entries.length && this.entries[n]!.seq < next) this.unackedBytes -= this.entries[n++]!.size;
    this.entries.splice(0, n);
    if (this.sent < next) this.sent = next;
    this.persist();
    if (this.sent < this.nextSeqValue && !this.inFlight()) this.flush(); // what gathered meanwhile
    this.emit("acked", next);
    if (this.dropped.bytes > 0 && this.unackedBytes < this.cfg.maxUnackedBytes / 2) this.reportDropped();
    if (this.entries.length === 0) for (const w of [...this.drainWaiters]) w();
  }

  /**
   * The server has more than this runner ever numbered: the spool was lost (a new home for the
   * same job submission). Renumber what is unacked to follow the server's count, so it is stored
   * instead of being skipped as duplicates.
   */
  private renumberFrom(next: number): void {
    this.entries.forEach((e, i) => (e.seq = next + i));
    this.ackedValue = next;
    this.nextSeqValue = next + this.entries.length;
    this.spool.rewrite(this.entries, next);
    this.sent = next;
    this.flush();
    this.emit("acked", next);
    if (this.entries.length === 0) for (const w of [...this.drainWaiters]) w();
  }

  private reportDropped(): void {
    const { bytes, entries } = this.dropped;
    this.dropped = { bytes: 0, entries: 0 };
    const mib = (this.cfg.maxUnackedBytes / 1048576).toFixed(0);
    this.add(
      LogStream.RUNNER,
      Buffer.from(`dstack-runner: ${bytes} bytes of output (${entries} chunks) were dropped: the server did not acknowledge logs and the runner keeps at most ${mib} MiB unacknowledged\n`),
    );
  }

  /** Saves the ack position now and then, and compacts the spool once acked records dominate it. */
  private persist(): void {
    const live = this.unackedBytes + this.entries.length * 32;
    if (this.spool.bytes > 4 * 1024 * 1024 && this.spool.bytes > 2 * live) {
      this.spool.rewrite(this.entries, this.ackedValue);
      this.lastStateSave = Date.now();
    } else if (Date.now() - this.lastStateSave > 1000) {
      this.spool.saveState(this.ackedValue);
      this.lastStateSave = Date.now();
    }
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stop.signal.aborted) {
      let acked = false;
      try {
        acked = await this.streamOnce();
      } catch (e) {
        if (!this.stop.signal.aborted) this.emit("error", e);
      }
      if (this.stop.signal.aborted) break;
      attempt = acked ? 0 : attempt + 1;
      await sleep(backoffDelay(attempt, this.cfg.backoff), this.stop.signal);
    }
  }

  /** One Push stream from dial to end; true if the server acked anything on it. */
  private async streamOnce(): Promise<boolean> {
    const conn = this.o.connect();
    const out = new AsyncQueue<PushRequest>();
    const abort = new AbortController();
    const onStop = () => abort.abort();
    this.stop.signal.addEventListener("abort", onStop, { once: true });
    let acked = false;
    try {
      this.out = out;
      this.sent = this.entries[0]?.seq ?? this.nextSeqValue; // resend everything unacked
      this.flush();
      const client = createClient(LogService, conn.transport);
      for await (const res of client.push(out, { signal: abort.signal })) {
        acked = true;
        if (res.jobSubmissionId && res.jobSubmissionId !== this.o.jobSubmissionId) continue;
        this.onAck(Number(res.nextSequence));
      }
      return acked;
    } finally {
      this.stop.signal.removeEventListener("abort", onStop);
      if (this.out === out) this.out = null;
      out.end();
      conn.close();
    }
  }
}

const tsMs = (e: LogEntry): number => (e.timestamp ? Number(e.timestamp.seconds) * 1000 + Math.floor(e.timestamp.nanos / 1e6) : 0);

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });
