import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { PingCommandSchema } from "@dstack/proto/agent";
import { enrollShim, once, simShim, startMesh, type MeshFixture } from "./harness.js";

describe("mesh: enroll and link", () => {
  let f: MeshFixture;
  beforeAll(async () => {
    f = await startMesh();
  });
  afterAll(async () => f?.cleanup());

  it("enrolls a shim, links it, and answers a reverse call", async () => {
    const t0 = performance.now();
    const { home, instanceId } = await enrollShim(f);
    const enrollMs = performance.now() - t0;
    const shim = simShim(home);
    const t1 = performance.now();
    await shim.link.waitConnected();
    const connectMs = performance.now() - t1;
    const link = f.mesh.links.shim(instanceId);
    expect(link.connected).toBe(true);
    const r0 = await link.call({ case: "ping", value: create(PingCommandSchema) });
    expect(r0.agentTime).toBeDefined();
    const n = 200;
    const t2 = performance.now();
    for (let i = 0; i < n; i++) await link.call({ case: "ping", value: create(PingCommandSchema) });
    const rttMs = (performance.now() - t2) / n;
    console.log(`enroll ${enrollMs.toFixed(1)} ms, link up ${connectMs.toFixed(1)} ms, reverse call round trip ${rttMs.toFixed(3)} ms`);
    await shim.link.close();
  });
});
