// Helpers for the shim's integration tests: a script image (busybox whose CMD runs $SCRIPT, as the
// test images have no CMD and a task has no command of its own), unique names, waiting for a
// task state, and cleanup of every container an instance id labelled.
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TaskState, type TaskInfo } from "@dstack/proto/agent";
import { docker, requireTestImages, TEST_IMAGES } from "../helpers/docker.js";

/** busybox with `CMD ["sh","-c","eval \"$SCRIPT\""]`: the task's env says what it does. */
export const SCRIPT_IMAGE = "dstack-test/shim-script:1";

let made: Promise<void> | undefined;
export function requireScriptImage(): Promise<void> {
  made ??= (async () => {
    await requireTestImages([TEST_IMAGES.busybox]);
    const d = docker();
    try {
      await d.getImage(SCRIPT_IMAGE).inspect();
      return;
    } catch {
      /* make it */
    }
    const c = await d.createContainer({ Image: TEST_IMAGES.busybox, Cmd: ["sh"], Labels: { "dstack-test.helper": "1" } });
    try {
      await c.commit({ repo: "dstack-test/shim-script", tag: "1", changes: ['CMD ["sh","-c","eval \\"$SCRIPT\\""]'] });
    } finally {
      await c.remove({ force: true }).catch(() => {});
    }
  })();
  return made;
}

export const uniq = (prefix: string): string => `${prefix}-${randomBytes(4).toString("hex")}`;

export const tempHome = (): string => mkdtempSync(join(tmpdir(), "dstack-shim-test-"));

/** Removes every container labelled with one of these instance ids. */
export async function removeInstanceContainers(...instanceIds: string[]): Promise<void> {
  const d = docker();
  for (const id of instanceIds) {
    const list = await d.listContainers({ all: true, filters: { label: [`dstack.shim.instance-id=${id}`] } });
    await Promise.all(list.map((c) => d.getContainer(c.Id).remove({ force: true, v: true }).catch(() => {})));
  }
}

/** Collects onChange reports and waits for one that matches. */
export class TaskEvents {
  readonly seen: TaskInfo[] = [];
  private waiters: { pred: (t: TaskInfo) => boolean; resolve: (t: TaskInfo) => void }[] = [];

  readonly onChange = (t: TaskInfo): void => {
    this.seen.push(t);
    this.waiters = this.waiters.filter((w) => (w.pred(t) ? (w.resolve(t), false) : true));
  };

  /** Resolves with the first report (past or future) matching; rejects after timeoutMs. */
  wait(pred: (t: TaskInfo) => boolean, timeoutMs = 20_000, what = "a matching task report"): Promise<TaskInfo> {
    const past = this.seen.find(pred);
    if (past) return Promise.resolve(past);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms; saw ${JSON.stringify(this.seen.map((t) => [t.taskId, TaskState[t.state]]))}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (t) => (clearTimeout(timer), resolve(t)) });
    });
  }

  state(taskId: string, state: TaskState, timeoutMs?: number): Promise<TaskInfo> {
    return this.wait((t) => t.taskId === taskId && t.state === state, timeoutMs, `${TaskState[state]} report for ${taskId}`);
  }

  states(taskId: string): string[] {
    return this.seen.filter((t) => t.taskId === taskId).map((t) => TaskState[t.state]).filter((s, i, a) => a[i - 1] !== s);
  }
}

/**
 * A stand-in runner bundle: the "loader" is a shell script that prints what the container sees
 * (its arguments and /dstack/task/bootstrap.json), so the mount and entrypoint wiring can be
 * checked in a busybox image without the real Node bundle.
 */
export function fakeRunnerBundle(): string {
  const dir = mkdtempSync(join(tmpdir(), "fake-runner-bundle-"));
  chmodSync(dir, 0o755); // mkdtemp makes it 0700; a non-root container user must read it
  mkdirSync(join(dir, "lib"));
  mkdirSync(join(dir, "bin"));
  const loader = join(dir, "lib/ld-linux-x86-64.so.2");
  writeFileSync(loader, '#!/bin/sh\necho "args: $*"\ncat /dstack/task/bootstrap.json\ntouch /dstack/task/written-by-runner\n');
  chmodSync(loader, 0o755);
  writeFileSync(join(dir, "bin/node"), "");
  writeFileSync(join(dir, "runner.js"), "");
  return dir;
}

/** Polls `fn` until it returns a value (not undefined) or throws past the deadline. */
export async function eventually<T>(fn: () => Promise<T | undefined>, timeoutMs = 15_000, stepMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`not within ${timeoutMs} ms${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
