// LogService → services.logs. Messages travel as raw bytes; timestamps as protobuf Timestamps.
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { LogEventSchema, LogEventSource, type LogService } from "@dstack/proto/api";
import type { LogEntry } from "../services/logs.js";
import { caller } from "./context.js";
import type { HandlerDeps } from "./deps.js";

const SOURCES = { stdout: LogEventSource.STDOUT, stderr: LogEventSource.STDERR, runner: LogEventSource.RUNNER } as const;
const event = (e: LogEntry) => create(LogEventSchema, { timestamp: timestampFromDate(e.timestamp), source: SOURCES[e.source], message: e.message });

export function logHandlers({ services }: HandlerDeps): Partial<ServiceImpl<typeof LogService>> {
  const { logs } = services;
  return {
    pollLogs: async (req, ctx) => {
      const id = await logs.resolveSubmission(caller(ctx), req.projectName, req.runName, { jobSubmissionId: req.jobSubmissionId, replicaNum: req.replicaNum, jobNum: req.jobNum });
      const page = await logs.poll(id, {
        ...(req.startTime ? { startTime: timestampDate(req.startTime) } : {}),
        ...(req.endTime ? { endTime: timestampDate(req.endTime) } : {}),
        descending: req.descending,
        limit: req.limit,
        nextToken: req.nextToken,
        diagnose: req.diagnose,
      });
      return { logs: page.entries.map(event), nextToken: page.nextToken };
    },
    async *followLogs(req, ctx) {
      const id = await logs.resolveSubmission(caller(ctx), req.projectName, req.runName, { jobSubmissionId: req.jobSubmissionId, replicaNum: req.replicaNum, jobNum: req.jobNum });
      for await (const batch of logs.follow(id, { ...(req.since ? { since: timestampDate(req.since) } : {}), diagnose: req.diagnose, signal: ctx.signal })) {
        yield { logs: batch.entries.map(event), finished: batch.finished, jobSubmissionId: id };
      }
    },
  };
}
