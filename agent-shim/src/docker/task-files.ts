// Per-task files on the host: the task folder (mounted into the container for the runner) and a
// small record of a termination request, which labels cannot hold (they are fixed at create time).
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TerminationRequest {
  reason: number;
  message: string;
}

export class TaskFiles {
  constructor(readonly home: string) {}

  get tasksDir(): string {
    return join(this.home, "tasks");
  }

  private requestFile(taskId: string): string {
    return join(this.home, "task-state", `${taskId}.json`);
  }

  saveRequest(taskId: string, r: TerminationRequest): void {
    const dir = join(this.home, "task-state");
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = this.requestFile(taskId);
    writeFileSync(`${file}.tmp`, JSON.stringify(r) + "\n", { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  loadRequest(taskId: string): TerminationRequest | null {
    const file = this.requestFile(taskId);
    if (!existsSync(file)) return null;
    try {
      const r = JSON.parse(readFileSync(file, "utf8")) as Partial<TerminationRequest>;
      return typeof r.reason === "number" ? { reason: r.reason, message: typeof r.message === "string" ? r.message : "" } : null;
    } catch {
      return null;
    }
  }

  /** Deletes the task folder and the request record. */
  remove(taskId: string): void {
    rmSync(join(this.tasksDir, taskId), { recursive: true, force: true });
    rmSync(this.requestFile(taskId), { force: true });
  }
}
