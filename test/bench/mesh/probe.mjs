// Preloaded into the dstack-server process by test/bench/mesh.bench.ts (`node --import`), so the
// benchmark can see inside the real server without the server growing a debug endpoint. It talks
// over the IPC channel the bench opens:
//   { op: "mem" }   → process.memoryUsage() after a full GC (the server runs with --expose-gc)
//   { op: "hook" }  → imports the server's own links.ts (same module instance: tsx is registered
//                     by then) and wraps Links.prototype.open to capture the link registry
//   { op: "ping", count, intervalMs, deadlineMs } → `ping` reverse calls to random linked agents,
//                     one every intervalMs (open loop), round trips in ms measured here
//   { op: "heartbeats" } → connected links by the heartbeat period they were told (ms → count)
//   { op: "heap-snapshot", path } → v8.writeHeapSnapshot(path)
//   { op: "profile-start" } / { op: "profile-stop", path } → a V8 CPU profile of the main thread
//                     between the two, written to `path` (open it in Chrome DevTools)
// Plain ESM JavaScript on purpose: it loads before the server's bin registers tsx.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";

const REPO = fileURLToPath(new URL("../../..", import.meta.url));
let links = null;

async function hook() {
  const mod = await import(pathToFileURL(join(REPO, "server", "src", "mesh", "links.ts")).href);
  const open = mod.Links.prototype.open;
  if (!open.__benchHooked) {
    const wrapped = function (...args) {
      links = this;
      return open.apply(this, args);
    };
    wrapped.__benchHooked = true;
    mod.Links.prototype.open = wrapped;
  }
}

function mem() {
  if (typeof globalThis.gc === "function") {
    globalThis.gc();
    globalThis.gc();
  }
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, links: links ? links.connected().length : 0 };
}

async function ping({ count, intervalMs, deadlineMs }) {
  if (!links) throw new Error("no link registry captured (hook before agents connect)");
  const pool = links.connected();
  if (pool.length === 0) throw new Error("no connected links");
  const rtts = [];
  let failed = 0;
  const calls = [];
  for (let i = 0; i < count; i++) {
    const link = pool[Math.floor(Math.random() * pool.length)];
    const t = performance.now();
    calls.push(
      link.call({ case: "ping", value: {} }, { deadlineMs }).then(
        () => rtts.push(performance.now() - t),
        () => failed++,
      ),
    );
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  await Promise.all(calls);
  return { rtts, failed, linked: pool.length };
}

/** Connected links by the heartbeat period each was told in LinkAccepted (ms → count). */
function heartbeats() {
  const by = {};
  for (const l of links ? links.connected() : []) by[l.heartbeatMs] = (by[l.heartbeatMs] ?? 0) + 1;
  return by;
}

let session = null;
const post = (method, params) => new Promise((ok, fail) => session.post(method, params, (e, r) => (e ? fail(e) : ok(r))));

async function profileStart() {
  session ??= new Session();
  session.connect();
  await post("Profiler.enable");
  await post("Profiler.setSamplingInterval", { interval: 500 });
  await post("Profiler.start");
  return { started: true };
}

async function profileStop(path) {
  const { profile } = await post("Profiler.stop");
  session.disconnect();
  writeFileSync(path, JSON.stringify(profile));
  return { path };
}

process.on("message", (msg) => {
  const reply = (body) => process.send?.({ id: msg.id, ...body });
  Promise.resolve()
    .then(async () => {
      if (msg.op === "mem") return mem();
      if (msg.op === "hook") return hook().then(() => ({ hooked: true }));
      if (msg.op === "ping") return ping(msg);
      if (msg.op === "heap-snapshot") return { path: (await import("node:v8")).writeHeapSnapshot(msg.path) };
      if (msg.op === "heartbeats") return heartbeats();
      if (msg.op === "ids") return links ? links.connected().map((l) => `${l.kind}/${l.id}`) : [];
      if (msg.op === "profile-start") return profileStart();
      if (msg.op === "profile-stop") return profileStop(msg.path);
      throw new Error(`unknown op ${msg.op}`);
    })
    .then(
      (result) => reply({ ok: true, result }),
      (e) => reply({ ok: false, error: e instanceof Error ? e.stack ?? e.message : String(e) }),
    );
});
