import { execFile } from "node:child_process";
import { randomBytes, createHash } from "node:crypto";
import http2 from "node:http2";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDualServer, type DualServer } from "./dual-server.js";

const run = promisify(execFile);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

// Echoes protocol version, body length and body hash, so reordered or lost bytes show up.
describe("one plain-text port for HTTP/1.1 and h2c", () => {
  let server: DualServer;
  let base: string;
  beforeAll(async () => {
    server = createDualServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ version: req.httpVersion, length: body.length, sha: sha(body) }));
      });
    });
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    server.closeHttp2Sessions();
    await new Promise((ok) => server.close(ok));
  });

  const body = randomBytes(300_000);

  it("serves HTTP/1.1 with large bodies intact", async () => {
    const res = await fetch(`${base}/x`, { method: "POST", body });
    expect(await res.json()).toEqual({ version: "1.1", length: body.length, sha: sha(body) });
  });

  it("serves h2c (prior knowledge) with large bodies intact, many streams on one session", async () => {
    const session = http2.connect(base);
    try {
      const one = () =>
        new Promise<unknown>((ok, fail) => {
          const req = session.request({ ":method": "POST", ":path": "/x" });
          let out = "";
          req.setEncoding("utf8").on("data", (d: string) => (out += d));
          req.on("end", () => ok(JSON.parse(out)));
          req.on("error", fail);
          req.end(body);
        });
      const results = await Promise.all([one(), one(), one(), one()]);
      for (const r of results) expect(r).toEqual({ version: "2.0", length: body.length, sha: sha(body) });
    } finally {
      session.close();
    }
  });

  it("works for the curl binary on both protocols", async () => {
    const h1 = await run("curl", ["-s", "-d", "hello", `${base}/x`]);
    const h2 = await run("curl", ["-s", "--http2-prior-knowledge", "-d", "hello", `${base}/x`]);
    expect(JSON.parse(h1.stdout)).toMatchObject({ version: "1.1", length: 5 });
    expect(JSON.parse(h2.stdout)).toMatchObject({ version: "2.0", length: 5 });
  });
});
