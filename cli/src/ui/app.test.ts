// Mounts the Ink dashboard against a fake client on fake terminal streams and reads its frames.
import { EventEmitter } from "node:events";
import { PassThrough, Writable } from "node:stream";
import { RunStatus } from "@dstack/proto/api";
import { render } from "ink";
import { createElement } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { App } from "./app.js";
import { Dashboard } from "./controller.js";
import { runUi } from "./main.js";
import { FakeClient, eventually, fakeFleet, fakeRun } from "./testing/fake-client.js";

// As cli/bin/dstack-ui.js does before Ink loads: under CI Ink would draw only its last frame.
vi.hoisted(() => {
  delete process.env.CI;
  delete process.env.CONTINUOUS_INTEGRATION;
});

// eslint-disable-next-line no-control-regex
const plain = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");

class FakeStdout extends Writable {
  isTTY = true;
  columns = 120;
  rows = 20;
  writes: string[] = [];
  override _write(chunk: Buffer | string, _enc: string, done: () => void) {
    this.writes.push(chunk.toString());
    done();
  }
  /** The last frame Ink drew (debug mode writes whole frames). */
  frame(): string {
    return plain(this.writes.at(-1) ?? "");
  }
  all(): string {
    return plain(this.writes.join(""));
  }
}

function fakeStdin(): NodeJS.ReadStream {
  const s = new PassThrough() as unknown as NodeJS.ReadStream & EventEmitter;
  Object.assign(s, { isTTY: true, setRawMode: () => s, ref: () => s, unref: () => s });
  return s;
}

const press = (stdin: NodeJS.ReadStream, keys: string) => (stdin as unknown as PassThrough).write(keys);
const DOWN = "\x1b[B";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

describe("dstack ui (Ink app)", () => {
  it("draws the runs table, opens the selected run's logs with ↓ Enter, goes to fleets, and unmounts on q", async () => {
    const client = new FakeClient();
    client.fleetList = [fakeFleet("gpus")];
    const dashboard = new Dashboard(client, { fleetsEveryMs: 50 });
    cleanups.push(() => dashboard.close());
    const stdout = new FakeStdout();
    const stdin = fakeStdin();
    const app = render(createElement(App, { dashboard }), {
      stdout: stdout as unknown as NodeJS.WriteStream,
      stdin,
      debug: true,
      patchConsole: false,
      exitOnCtrlC: false,
    });
    cleanups.push(() => app.unmount());
    dashboard.start();
    await eventually(() => expect(stdout.frame()).toContain("Loading runs…"));
    expect(stdout.frame()).toContain("http://127.0.0.1:3000 · project main");
    await eventually(() => expect(client.watches).toHaveLength(1));
    client.snapshot([fakeRun("train-1", RunStatus.RUNNING, 1), fakeRun("eval-2", RunStatus.SUBMITTED, 2)]);
    await eventually(() => {
      const f = stdout.frame();
      expect(f).toMatch(/NAME\s+BACKEND\s+RESOURCES\s+PRICE\s+STATUS\s+SUBMITTED/);
      expect(f).toMatch(/train-1 .*running/);
      expect(f).toMatch(/eval-2 .*submitted/);
      expect(f).toContain("Enter logs");
    });
    // A change from the watch shows up.
    client.update(fakeRun("train-1", RunStatus.TERMINATING, 1));
    await eventually(() => expect(stdout.frame()).toMatch(/train-1 .*terminating/));

    press(stdin, DOWN);
    await eventually(() => expect(dashboard.getState().selected).toBe("id-eval-2"));
    press(stdin, "\r");
    await eventually(() => expect(client.logFeeds.has("eval-2")).toBe(true));
    client.log("eval-2", "epoch 1 loss=0.5\n\x1b[32mepoch 2\x1b[0m loss=0.25\n");
    await eventually(() => {
      const f = stdout.frame();
      expect(f).toContain("Logs of eval-2 (following…)");
      expect(f).toContain("epoch 1 loss=0.5");
      expect(f).toContain("epoch 2 loss=0.25");
    });

    press(stdin, "f");
    await eventually(() => expect(stdout.frame()).toMatch(/gpus .*active/));
    expect(stdout.frame()).toMatch(/instance=0 10\.0\.0\.7/);
    press(stdin, "r");
    await eventually(() => expect(stdout.frame()).toMatch(/eval-2 .*submitted/));

    // A failing stop shows in the status line; the UI stays up.
    client.stopError = new Error("Run 'train-1' is being stopped already");
    press(stdin, "k");
    press(stdin, "s");
    await eventually(() => expect(stdout.frame()).toContain("Stop run train-1? [y/n]"));
    press(stdin, "y");
    await eventually(() => expect(stdout.frame()).toContain("Stop train-1: Run 'train-1' is being stopped already"));

    press(stdin, "q");
    await app.waitUntilExit();
    expect(dashboard.closed).toBe(true);
  });

  it("runUi takes the alternate screen, gives it back on q and resolves 0; without a terminal it exits 2", async () => {
    const client = new FakeClient();
    const stdout = new FakeStdout();
    const stdin = fakeStdin();
    const stderr = new FakeStdout();
    const done = runUi(client, { stdout: stdout as unknown as NodeJS.WriteStream, stdin, stderr: stderr as unknown as NodeJS.WriteStream, env: {}, patchConsole: false });
    await eventually(() => expect(client.watches).toHaveLength(1));
    client.snapshot([fakeRun("train-1", RunStatus.RUNNING, 1)]);
    await eventually(() => expect(stdout.all()).toContain("train-1"));
    press(stdin, "q");
    expect(await done).toBe(0);
    expect(stdout.writes[0]).toContain("\x1b[?1049h");
    expect(stdout.writes.join("")).toMatch(/\x1b\[\?1049l[^]*$/);

    const pipe = new FakeStdout();
    pipe.isTTY = false;
    const err = new FakeStdout();
    expect(await runUi(new FakeClient(), { stdout: pipe as unknown as NodeJS.WriteStream, stdin: fakeStdin(), stderr: err as unknown as NodeJS.WriteStream, env: {} })).toBe(2);
    expect(err.all()).toMatch(/^dstack ui needs a terminal; use dstack ps -w/);
    expect(pipe.writes).toEqual([]);
  });
});
