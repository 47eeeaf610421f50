// ShimCommand → executor. Thin: each handler validates what the link cannot and delegates.
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampNow } from "@bufbuild/protobuf/wkt";
import {
  GetHostInfoResultSchema,
  GetTaskResultSchema,
  LinkErrorCode,
  ListTasksResultSchema,
  PingResultSchema,
  RemoveTaskResultSchema,
  ShutdownResultSchema,
  SubmitTaskResultSchema,
  TaskState,
  TerminateTaskResultSchema,
  type HostInfo,
} from "@dstack/proto/agent";
import { LinkCallError, type CommandHandlers } from "@dstack/proto/link";
import type { TaskExecutor } from "../docker/executor.js";

export interface HandlerDeps {
  executor: TaskExecutor;
  /** Fresh host facts (getHostInfo). */
  hostInfo: () => Promise<HostInfo>;
  /** Asked to stop the shim; called after the reply is on its way. */
  shutdown: () => void;
}

/** The shim's command handlers (openTunnel is wired where the tunnels live). */
export function shimHandlers(d: HandlerDeps): CommandHandlers<"shim"> {
  const ex = d.executor;
  return {
    ping: () => create(PingResultSchema, { agentTime: timestampNow() }),
    submitTask: (cmd) => create(SubmitTaskResultSchema, { task: ex.submit(cmd) }),
    terminateTask: async (cmd) =>
      create(TerminateTaskResultSchema, {
        task: await ex.terminate(cmd.taskId, {
          reason: cmd.terminationReason || undefined,
          message: cmd.terminationMessage,
          timeoutMs: cmd.timeout ? durationMs(cmd.timeout) : 0,
        }),
      }),
    removeTask: async (cmd) => {
      await ex.remove(cmd.taskId);
      return create(RemoveTaskResultSchema);
    },
    getTask: (cmd) => create(GetTaskResultSchema, { task: ex.get(cmd.taskId) }),
    listTasks: () => create(ListTasksResultSchema, { tasks: ex.list() }),
    getHostInfo: async () => create(GetHostInfoResultSchema, { hostInfo: await d.hostInfo() }),
    shutdown: (cmd) => {
      const active = ex.list().filter((t) => t.state !== TaskState.TERMINATED);
      if (!cmd.force && active.length > 0) {
        throw new LinkCallError(`${active.length} task(s) still running; shut down with force to leave them running`, LinkErrorCode.FAILED_PRECONDITION);
      }
      // Let the reply go out before the link closes.
      setTimeout(d.shutdown, 200);
      return create(ShutdownResultSchema);
    },
  };
}
