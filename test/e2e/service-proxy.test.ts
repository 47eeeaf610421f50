// The in-server service proxy end to end on this machine: a REAL server with its local fleet runs
// a `type: service` (busybox httpd with a CGI script) in a real container, and plain HTTP requests
// to `<server>/proxy/services/<project>/<run>/…` reach it through the mesh tunnel — with the
// project member's token unless `auth: false`, the prefix stripped unless `strip_prefix: false`,
// bodies and methods passed through, dstack's token kept from the service.
import http from "node:http";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobStatus, JobTerminationReason, RunStatus } from "@dstack/proto/api";
import { Client } from "../../cli/src/index.js";
import { dstack, type CliRun } from "../cli/run-cli.js";
import { TEST_IMAGES, requireTestImages, removeContainers } from "../helpers/docker.js";
import { freePort, localFleetReady, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { until } from "../helpers/sim-agents.js";

const SLOW = 240_000;
const SUFFIX = Date.now().toString(36);
const SVC = `svc-${SUFFIX}`;
const OPEN = `open-${SUFFIX}`;
const WS = `ws-${SUFFIX}`;
const AUTO = `auto-${SUFFIX}`;

let server: TestServer & { where: ServerEnv };
let client: Client;
let cli: CliRun;
let work: string;

/** A CGI script that answers with what it was asked: method, path, the proxy's headers, the body. */
const ECHO_CGI = [
  "#!/bin/sh",
  // busybox httpd passes a CGI's header lines through as they are: HTTP wants CRLF.
  "printf 'Content-Type: text/plain\\r\\nX-Echo: yes\\r\\n\\r\\n'",
  'echo "method=$REQUEST_METHOD uri=$REQUEST_URI"',
  'echo "prefix=$HTTP_X_FORWARDED_PREFIX authorization=$HTTP_AUTHORIZATION"',
  'echo "body=$(cat)"',
].join("\n");

/** A service whose commands write its web root (page + CGI) and serve it with busybox httpd. */
async function serviceDir(name: string, port: number, extra: string[], pagePath: string): Promise<string> {
  const dir = await mkdtemp(join(work, "svc-"));
  await mkdir(join(dir, "www", "cgi-bin"), { recursive: true });
  await mkdir(join(dir, "www", pagePath), { recursive: true });
  await writeFile(join(dir, "www", pagePath, "hello.txt"), `hello from ${name}\n`);
  await writeFile(join(dir, "www", "cgi-bin", "echo"), `${ECHO_CGI}\n`);
  await chmod(join(dir, "www", "cgi-bin", "echo"), 0o755);
  const commands = ["chmod 755 www/cgi-bin/echo", `exec httpd -f -p ${port} -h www`];
  await writeFile(
    join(dir, ".dstack.yml"),
    ["type: service", `name: ${name}`, `image: ${TEST_IMAGES.busybox}`, `port: ${port}`, ...extra, "commands:", ...commands.map((c) => `  - ${JSON.stringify(c)}`), "resources:", "  cpu: 1..", "  memory: 128MB..", ""].join("\n"),
  );
  return dir;
}

/**
 * An upgrade server in busybox: nc runs this per connection; it reads the request head, switches
 * protocols, says which request line it saw, then echoes (a WebSocket server's shape, minus framing).
 */
const UPGRADE_SH = [
  "#!/bin/sh",
  "IFS= read -r first",
  "while IFS= read -r line; do [ \"${line%$(printf '\\r')}\" = '' ] && break; done",
  "printf 'HTTP/1.1 101 Switching Protocols\\r\\nConnection: Upgrade\\r\\nUpgrade: echo\\r\\n\\r\\n'",
  "printf 'saw %s\\n' \"${first%$(printf '\\r')}\"",
  "exec cat",
].join("\n");

/** Asks for an upgrade, sends `ping`, and resolves with the status and what came back (or the plain response). */
function upgradeEcho(target: string, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(target, { headers: { connection: "Upgrade", upgrade: "echo", ...headers } });
    req.on("upgrade", (res, socket, head) => {
      let text = head.toString();
      socket.write("ping\n");
      const done = () => text.includes("ping\n") && (socket.destroy(), resolve({ status: res.statusCode ?? 0, text }));
      socket.on("data", (d: Buffer) => ((text += d.toString()), done()));
      done();
    });
    req.on("response", (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on("error", reject);
    req.end();
  });
}

const url = (run: string, path = "/") => `${server.url.replace(/\/$/, "")}/proxy/services/main/${run}${path}`;
const bearer = () => ({ authorization: `Bearer ${server.adminToken}` });

/** Applies the service and waits until its page answers through the proxy (`pagePath`: where httpd finds it). */
async function startService(name: string, extra: string[] = [], pagePath = "", headers: Record<string, string> = bearer()): Promise<void> {
  const dir = await serviceDir(name, await freePort(), extra, pagePath);
  const r = await dstack(["apply", "-y", "-d"], { ...cli, cwd: dir });
  expect(r.code, r.stderr).toBe(0);
  await until(async () => ((await client.runs.get(name)).status === RunStatus.RUNNING ? true : undefined), `${name} to run`, 60_000);
  // httpd listens a moment after the run is running.
  await until(async () => ((await fetch(url(name, "/hello.txt"), { headers }).catch(() => null))?.status === 200 ? true : undefined), `${name} to answer`, 30_000);
}

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  // The autoscaler looks every second instead of every 10.
  server = await startTestServer("sqlite", { localFleet: true, env: { DSTACK_SERVER_AUTOSCALE_INTERVAL: "1" } });
  await localFleetReady(server);
  work = await mkdtemp(join(tmpdir(), "dstack-e2e-proxy-"));
  cli = { home: server.where.home };
  client = Client.fromConfig({ env: { HOME: server.where.home } });
}, SLOW);

afterAll(async () => {
  await server?.stop();
  await removeContainers(SUFFIX);
  if (work) await rm(work, { recursive: true, force: true });
}, SLOW);

describe("the in-server service proxy", () => {
  it(
    "serves a running service to project members: the run shows its URL, the prefix is stripped, bodies pass, dstack's token stays out",
    async () => {
      await startService(SVC);
      expect((await client.runs.get(SVC)).service?.url).toBe(url(SVC, "/"));

      const page = await fetch(url(SVC, "/hello.txt"), { headers: bearer() });
      expect([page.status, await page.text()]).toEqual([200, `hello from ${SVC}\n`]);

      const post = await fetch(url(SVC, "/cgi-bin/echo?x=1"), { method: "POST", headers: { ...bearer(), "content-type": "text/plain" }, body: "ping-body" });
      expect(post.status, await post.clone().text()).toBe(200);
      expect(post.headers.get("x-echo")).toBe("yes");
      expect(await post.text()).toBe(`method=POST uri=/cgi-bin/echo?x=1\nprefix=/proxy/services/main/${SVC} authorization=\nbody=ping-body\n`);

      // Without the trailing slash: a permanent redirect that keeps the method.
      const bare = await fetch(url(SVC, ""), { headers: bearer(), redirect: "manual" });
      expect([bare.status, bare.headers.get("location")]).toEqual([308, `/proxy/services/main/${SVC}/`]);
    },
    SLOW,
  );

  it(
    "refuses callers without a member's token, and names what is missing",
    async () => {
      const anonymous = await fetch(url(SVC, "/hello.txt"));
      expect(anonymous.status).toBe(401);
      expect(((await anonymous.json()) as { detail: string }).detail).toMatch(/token/i);
      expect((await fetch(url(SVC, "/hello.txt"), { headers: { authorization: "Bearer not-a-token" } })).status).toBe(401);

      const missing = await fetch(url(`nope-${SUFFIX}`, "/"), { headers: bearer() });
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as { detail: string }).detail).toContain(`Service 'nope-${SUFFIX}' does not exist in project 'main'`);
    },
    SLOW,
  );

  it(
    "a stopped service answers 503 naming its state; `auth: false` and `strip_prefix: false` are honoured",
    async () => {
      expect((await dstack(["stop", SVC, "-x", "-y"], cli)).code).toBe(0);
      await until(async () => ((await client.runs.get(SVC)).status === RunStatus.TERMINATED ? true : undefined), `${SVC} to stop`, 60_000);
      const stopped = await fetch(url(SVC, "/hello.txt"), { headers: bearer() });
      expect(stopped.status).toBe(503);
      expect(((await stopped.json()) as { detail: string }).detail).toContain(`Service '${SVC}' has no running replica (it is terminated)`);

      // No token needed, and httpd sees the whole path: the page lives under the proxy's prefix.
      await startService(OPEN, ["auth: false", "strip_prefix: false"], `proxy/services/main/${OPEN}`, {});
      const page = await fetch(url(OPEN, "/hello.txt"));
      expect([page.status, await page.text()]).toEqual([200, `hello from ${OPEN}\n`]);
    },
    SLOW,
  );

  it(
    "carries upgrades (WebSockets and the like) to the replica and bytes both ways; refuses them without a token",
    async () => {
      expect((await dstack(["stop", OPEN, "-x", "-y"], cli)).code).toBe(0);
      const port = await freePort();
      const dir = await mkdtemp(join(work, "ws-"));
      await writeFile(join(dir, "upgrade.sh"), `${UPGRADE_SH}\n`);
      await chmod(join(dir, "upgrade.sh"), 0o755);
      const commands = ["chmod 755 upgrade.sh", `exec nc -ll -p ${port} -e "$PWD/upgrade.sh"`];
      await writeFile(
        join(dir, ".dstack.yml"),
        ["type: service", `name: ${WS}`, `image: ${TEST_IMAGES.busybox}`, `port: ${port}`, "commands:", ...commands.map((c) => `  - ${JSON.stringify(c)}`), "resources:", "  cpu: 1..", "  memory: 128MB..", ""].join("\n"),
      );
      expect((await dstack(["apply", "-y", "-d"], { ...cli, cwd: dir })).code).toBe(0);
      await until(async () => ((await client.runs.get(WS)).status === RunStatus.RUNNING ? true : undefined), `${WS} to run`, 60_000);
      const echoed = await until(async () => ((r) => (r?.status === 101 ? r : undefined))(await upgradeEcho(url(WS, "/socket?room=1"), bearer()).catch(() => undefined)), `${WS} to upgrade`, 30_000);
      // The replica saw the path without the proxy's prefix, then echoed what we sent after the switch.
      expect(echoed.text).toBe("saw GET /socket?room=1 HTTP/1.1\nping\n");

      const refused = await upgradeEcho(url(WS, "/socket"), {});
      expect(refused.status).toBe(401);
      expect(JSON.parse(refused.text).detail).toMatch(/token/i);
      // An upgrade elsewhere on the server is served as a plain request, as before.
      const plain = await upgradeEcho(`${server.url.replace(/\/$/, "")}/healthcheck`, {});
      expect([plain.status, JSON.parse(plain.text)]).toEqual([200, { status: "running" }]);
      expect((await dstack(["stop", WS, "-x", "-y"], cli)).code).toBe(0);
    },
    SLOW,
  );

  it(
    "autoscales a service between its replicas on the proxy's request rate (`scaling: {metric: rps}`), up at once and down after the window",
    async () => {
      const dir = await mkdtemp(join(work, "auto-"));
      // Replicas that only sleep: on one host with host networking, two replicas could not both
      // bind one port. The proxy counts every request it authorizes, answered or not.
      await writeFile(
        join(dir, ".dstack.yml"),
        [
          "type: service",
          `name: ${AUTO}`,
          `image: ${TEST_IMAGES.busybox}`,
          "port: 8000",
          "replicas: 1..2",
          "scaling:",
          "  metric: rps",
          "  target: 1",
          "  window: 30s",
          "  scale_up_delay: 0s",
          "  scale_down_delay: 0s",
          "stop_duration: 0s",
          "commands: [sleep 600]",
          "resources:",
          "  cpu: 1..",
          "  memory: 128MB..",
          "",
        ].join("\n"),
      );
      expect((await dstack(["apply", "-y", "-d"], { ...cli, cwd: dir })).code).toBe(0);
      const replicasIn = async (status: JobStatus) => (await client.runs.get(AUTO)).jobs.filter((j) => j.jobSubmissions.at(-1)?.status === status).length;
      await until(async () => ((await replicasIn(JobStatus.RUNNING)) === 1 ? true : undefined), `${AUTO}: one replica running`, 60_000);
      // 90 requests in a 30 s window: 3 rps against a target of 1 → 3 replicas wanted, 2 at most.
      await Promise.all(Array.from({ length: 90 }, () => fetch(url(AUTO, "/"), { headers: bearer() }).then((r) => r.arrayBuffer())));
      await until(async () => ((await replicasIn(JobStatus.RUNNING)) === 2 ? true : undefined), `${AUTO}: scaled up to two replicas`, 60_000);
      // Quiet for the window: back to one, the newest replica scaled down.
      const down = await until(async () => ((r) => (r.jobs.some((j) => j.jobSubmissions.at(-1)?.terminationReason === JobTerminationReason.SCALED_DOWN) ? r : undefined))(await client.runs.get(AUTO)), `${AUTO}: scaled down`, 90_000);
      expect(down.status).toBe(RunStatus.RUNNING);
      expect(await replicasIn(JobStatus.RUNNING)).toBe(1);
      expect((await dstack(["stop", AUTO, "-x", "-y"], cli)).code).toBe(0);
    },
    SLOW,
  );
});
