import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WideWindowSessionManager } from "./enroll.js";

describe("WideWindowSessionManager", () => {
  let server: http2.Http2Server;
  let url = "";
  beforeAll(async () => {
    server = http2.createServer((_req, res) => res.end("ok"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it("keeps an error listener on its sessions after connect-node's own is gone (a late 'PING timed out' is not uncaught)", async () => {
    const manager = new WideWindowSessionManager(url, { pingIntervalMs: 30_000, pingTimeoutMs: 15_000, pingIdleConnection: false });
    const stream = await manager.request("GET", "/", {}, {});
    const session = stream.session!;
    stream.resume();
    await new Promise((r) => stream.once("close", r));
    manager.abort(); // connect-node drops its listeners and leaves one once-listener behind
    await new Promise((r) => setImmediate(r));
    const late = () => session.emit("error", new Error("PING timed out"));
    expect(late).not.toThrow(); // taken by connect-node's once-listener
    expect(late).not.toThrow(); // only ours is left
  });
});
