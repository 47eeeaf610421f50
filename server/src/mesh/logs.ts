// LogService.Push: a runner ships its job's output in numbered batches and the server acks each
// one once stored, with next_sequence (entries stored contiguously from 0). The agent keeps what
// is unacked and, on a new stream, re-sends from its oldest unacked entry, so:
// - a batch that overlaps what is stored is acked without storing twice;
// - a batch that starts beyond next_sequence (a gap) is refused — stored out of order, the log
//   could never become contiguous. The server first acks its next_sequence, so the agent knows
//   where it stands, then ends the stream with MESH_LOG_GAP (OUT_OF_RANGE);
// - an empty batch is a question: the ack says how far the server is;
// - the job comes from the TLS certificate; a batch naming another job ends the stream;
// - one request is read only after the previous one was stored and acked (backpressure), and
//   pushes for one job (a reconnect racing the old stream) are stored one at a time.
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext } from "@connectrpc/connect";
import { LogStream, PushResponseSchema, type PushRequest, type PushResponse } from "@dstack/proto/agent";
import type { MeshDataHooks, MeshLogEntry, MeshLogSource } from "./data-hooks.js";
import { meshErr } from "./errors.js";
import { requirePeer, type Peer } from "./peer.js";
import type { Revocations } from "./revocations.js";

export interface DataPlaneDeps {
  revocations: Revocations;
  data?: MeshDataHooks;
}

/** The calling runner; the data plane serves job containers only, never shims. */
export function requireRunner(deps: DataPlaneDeps, ctx: HandlerContext, service: string): Peer {
  const peer = requirePeer(ctx);
  if (peer.kind !== "runner") throw meshErr("MESH_WRONG_SERVICE", { kind: peer.kind, service });
  if (deps.revocations.isRevoked(peer.kind, peer.id)) throw meshErr("MESH_REVOKED", { kind: peer.kind, id: peer.id });
  return peer;
}

export function requireData(deps: DataPlaneDeps, service: string): MeshDataHooks {
  if (!deps.data) throw meshErr("MESH_DATA_UNAVAILABLE", { service });
  return deps.data;
}

/** Serializes work per key; the map holds only keys with work in flight. */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const work = prev.then(fn);
    const tail = work.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => this.tails.get(key) === tail && this.tails.delete(key));
    return work;
  }
}

const SOURCES: Partial<Record<LogStream, MeshLogSource>> = { [LogStream.STDERR]: "stderr", [LogStream.RUNNER]: "runner" };

function sequence(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw meshErr("MESH_PROTOCOL", { reason: `first_sequence ${v} is out of range` });
  return Number(v);
}

const ack = (job: string, next: number): PushResponse => create(PushResponseSchema, { jobSubmissionId: job, nextSequence: BigInt(next) });

export function logService(deps: DataPlaneDeps) {
  const locks = new KeyedLock();
  return {
    async *push(requests: AsyncIterable<PushRequest>, ctx: HandlerContext): AsyncGenerator<PushResponse> {
      const peer = requireRunner(deps, ctx, "LogService");
      const data = requireData(deps, "LogService");
      for await (const req of requests) {
        requireRunner(deps, ctx, "LogService"); // revoked mid-stream: stop storing
        const b = req.batch;
        if (!b) throw meshErr("MESH_PROTOCOL", { reason: "a PushRequest must carry a batch" });
        if (b.jobSubmissionId !== peer.id) throw meshErr("MESH_SPOOFED", { kind: peer.kind, id: peer.id, what: `logs of job ${b.jobSubmissionId || "(none)"}` });
        const first = sequence(b.firstSequence);
        // An unset stream counts as stdout: dropping output over a missing enum would lose it for good.
        const entries: MeshLogEntry[] = b.entries.map((e) => ({
          timestamp: e.timestamp ? timestampDate(e.timestamp) : new Date(),
          stream: SOURCES[e.stream] ?? "stdout",
          data: e.data,
        }));
        const next = await locks.run(peer.id, () => data.appendLogs(peer.id, first, entries));
        yield ack(peer.id, next);
        if (entries.length > 0 && next < first) throw meshErr("MESH_LOG_GAP", { job: peer.id, first, next });
      }
    },
  };
}
