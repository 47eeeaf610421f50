import { RunStatus } from "@dstack/proto/api";
import { afterEach, describe, expect, it } from "vitest";
import { Dashboard } from "./controller.js";
import { visibleRuns } from "./state.js";
import { FakeClient, eventually, fakeFleet, fakeRun } from "./testing/fake-client.js";

const dashboards: Dashboard[] = [];
function start(client: FakeClient, opts: ConstructorParameters<typeof Dashboard>[1] = {}): Dashboard {
  const d = new Dashboard(client, { retryMs: 20, maxRetryMs: 50, fleetsEveryMs: 30, ...opts });
  dashboards.push(d);
  d.start();
  return d;
}
afterEach(() => {
  for (const d of dashboards.splice(0)) d.close();
});

describe("dstack ui dashboard", () => {
  it("shows the watch's initial state at once, then applies each change", async () => {
    const client = new FakeClient();
    const d = start(client);
    await eventually(() => expect(client.watches).toHaveLength(1));
    client.update(fakeRun("a", RunStatus.RUNNING, 2));
    await new Promise((r) => setTimeout(r, 20));
    expect(d.getState().runsLoaded).toBe(false); // not before initial_state_sent
    client.snapshot([fakeRun("b", RunStatus.SUBMITTED, 3)]);
    await eventually(() => expect(visibleRuns(d.getState()).map((r) => r.runSpec?.runName)).toEqual(["a", "b"]));
    client.update(fakeRun("c", RunStatus.PROVISIONING, 1));
    await eventually(() => expect(visibleRuns(d.getState())).toHaveLength(3));
  });

  it("reopens the watch after an error, says so in the status line, and clears it once back", async () => {
    const client = new FakeClient();
    const d = start(client);
    await eventually(() => expect(client.watches).toHaveLength(1));
    client.snapshot([fakeRun("a", RunStatus.RUNNING)]);
    client.watches[0]!.fail(new Error("connection refused"));
    await eventually(() => expect(d.getState().status).toMatchObject({ error: true, text: expect.stringContaining("Runs: connection refused (retrying in") }));
    await eventually(() => expect(client.watches).toHaveLength(2));
    // The server closing the stream is an error too.
    client.watches[1]!.end();
    await eventually(() => expect(client.watches).toHaveLength(3));
    client.snapshot([fakeRun("a", RunStatus.DONE), fakeRun("b", RunStatus.RUNNING)]);
    await eventually(() => expect(d.getState().status).toBeUndefined());
    expect(visibleRuns(d.getState())).toHaveLength(2);
  });

  it("follows the selected run's logs and stops following on the way back", async () => {
    const client = new FakeClient();
    const d = start(client);
    await eventually(() => expect(client.watches).toHaveLength(1));
    client.snapshot([fakeRun("a", RunStatus.RUNNING)]);
    await eventually(() => expect(d.getState().runsLoaded).toBe(true));
    d.key("", { return: true });
    await eventually(() => expect(client.logFeeds.has("a")).toBe(true));
    client.log("a", "hello\nwor");
    client.log("a", "ld\n");
    await eventually(() => expect(d.getState().logs?.lines).toEqual(["hello", "world"]));
    client.logFeeds.get("a")!.end();
    await eventually(() => expect(d.getState().logs?.ended).toBe(true));
    d.key("", { escape: true });
    expect(d.getState().view).toBe("runs");
  });

  it("stops and aborts after a y, and shows the server's refusal", async () => {
    const client = new FakeClient();
    const d = start(client);
    await eventually(() => expect(client.watches).toHaveLength(1));
    client.snapshot([fakeRun("a", RunStatus.RUNNING)]);
    await eventually(() => expect(d.getState().runsLoaded).toBe(true));
    d.key("s", {});
    d.key("y", {});
    await eventually(() => expect(d.getState().status?.text).toBe("Stop requested for a."));
    expect(client.stops).toEqual([{ names: "a", abort: false }]);
    client.stopError = new Error("Run 'a' is not active");
    d.key("x", {});
    d.key("y", {});
    await eventually(() => expect(d.getState().status).toEqual({ text: "Abort a: Run 'a' is not active", error: true }));
  });

  it("polls the fleets while their view is open, and only then", async () => {
    const client = new FakeClient();
    client.fleetList = [fakeFleet("gpus")];
    const d = start(client);
    d.key("f", {});
    await eventually(() => expect(d.getState().fleets.map((f) => f.name)).toEqual(["gpus"]));
    await eventually(() => expect(client.fleetCalls).toBeGreaterThanOrEqual(3));
    d.key("r", {});
    const calls = client.fleetCalls;
    await new Promise((r) => setTimeout(r, 100));
    expect(client.fleetCalls).toBe(calls);
  });

  it("quits on q: tells its listener and closes every stream", async () => {
    const client = new FakeClient();
    const d = start(client);
    let quit = 0;
    d.onQuit(() => quit++);
    await eventually(() => expect(client.watches).toHaveLength(1));
    d.key("q", {});
    expect(quit).toBe(1);
    expect(d.closed).toBe(true);
  });
});
