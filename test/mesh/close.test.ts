import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type MeshFixture } from "./harness.js";

describe("mesh: close", () => {
  let f: MeshFixture;
  beforeAll(async () => {
    f = await startMesh();
  });
  afterAll(async () => f?.cleanup());

  it("does not wait for a connection that has no HTTP/2 session (a TLS handshake never finished)", async () => {
    const raw: Socket = connect(f.port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => raw.once("connect", resolve).once("error", reject));
    raw.on("error", () => {});
    const closedByServer = new Promise<void>((r) => raw.once("close", () => r()));
    await new Promise((r) => setTimeout(r, 50)); // the server has accepted it
    const t0 = performance.now();
    await f.restart(); // close() then listen again
    expect(performance.now() - t0).toBeLessThan(5_000); // before, close() waited for TLS's 120 s handshake timeout
    await closedByServer;
  });
});
