#!/usr/bin/env node
// A stand-in for `dstack-shim` (DSTACK_SHIM_BIN in tests): appends its argv and pid to
// $FAKE_SHIM_LOG (JSON lines), enrolls (`join`) or loads its identity (`run`) with the real link
// library, reports a 4-CPU/16 GiB host, records when its link is up, and stays up until SIGTERM, which it records.
import { appendFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { register } from "tsx/esm/api";

register();
const record = (o) => appendFileSync(process.env.FAKE_SHIM_LOG, JSON.stringify({ ...o, pid: process.pid }) + "\n");
const argv = process.argv.slice(2);
record({ event: "start", argv });
let link = null;
process.on("SIGTERM", () => {
  record({ event: "sigterm" });
  void Promise.resolve(link?.close()).then(() => process.exit(0));
});
const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { server: { type: "string" }, token: { type: "string" }, "ca-sha256": { type: "string" }, home: { type: "string" } } });
const { enroll, connectLink } = await import("../../proto/src/link/index.ts");
if (positionals[0] === "join") {
  await enroll({ serverUrl: values.server, token: values.token, caSha256: values["ca-sha256"], kind: "shim", home: values.home, identity: { hostname: "fake-local" } });
}
const GIB = 2n ** 30n;
link = connectLink({
  kind: "shim",
  home: values.home,
  backoff: { initialMs: 50, maxMs: 500 },
  stateReport: () => ({ agentVersion: "fake", hostInfo: { hostname: "fake-local", cpus: 4, memoryBytes: 16n * GIB, diskTotalBytes: 200n * GIB }, tasks: [] }),
  handlers: {},
});
await link.waitConnected(30_000);
record({ event: "up" });
process.stderr.write("fake shim up\n");
