// The Run, Fleet, Instance, Offer and Log handlers through an in-memory Connect transport:
// proto in, service call, proto out (auth is the interceptors' business, set directly here).
import { randomUUID } from "node:crypto";
import { createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { parseConfiguration, toProtoConfiguration, toProtoResources, type RunConfig } from "@dstack/proto";
import { Availability, FleetService, InstanceService, JobStatus, LogService, OfferService, RunService, RunStatus, type FleetConfiguration } from "@dstack/proto/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Orm } from "../db/database.js";
import { createScheduler, type Scheduler } from "../scheduler/index.js";
import { bootstrap, createServices, type Services, type UserView } from "../services/index.js";
import { createTestEnv, DIALECTS, type TestEnv } from "../testing/db.js";
import { kCaller } from "./context.js";
import { fleetHandlers } from "./fleets.js";
import { instanceHandlers } from "./instances.js";
import { logHandlers } from "./logs.js";
import { offerHandlers } from "./offers.js";
import { runHandlers } from "./runs.js";
import type { HandlerDeps } from "./deps.js";

const conf = (yaml: string) => toProtoConfiguration(parseConfiguration(yaml, ".dstack.yml"));

describe.each(DIALECTS)("run/fleet/offer/log handlers on %s", (dialect) => {
  let env: TestEnv;
  let orm: Orm;
  let svc: Services;
  let sched: Scheduler;
  let admin: UserView;
  let clients: {
    runs: ReturnType<typeof createClient<typeof RunService>>;
    fleets: ReturnType<typeof createClient<typeof FleetService>>;
    instances: ReturnType<typeof createClient<typeof InstanceService>>;
    offers: ReturnType<typeof createClient<typeof OfferService>>;
    logs: ReturnType<typeof createClient<typeof LogService>>;
  };

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    orm = await openDatabase(env.settings.database);
    svc = createServices(orm, env.settings);
    admin = await svc.users.authenticate((await bootstrap(svc)).adminToken);
    sched = createScheduler({ orm, services: svc });
    await sched.start();
    const deps = { services: svc, settings: env.settings, orm, serverInfo: { version: "test", caFingerprintSha256: "" } } as HandlerDeps;
    const asAdmin: Interceptor = (next) => (req) => {
      req.contextValues.set(kCaller, admin);
      return next(req);
    };
    const transport = createRouterTransport(
      (router) => {
        router.service(RunService, runHandlers(deps));
        router.service(FleetService, fleetHandlers(deps));
        router.service(InstanceService, instanceHandlers(deps));
        router.service(OfferService, offerHandlers(deps));
        router.service(LogService, logHandlers(deps));
      },
      { router: { interceptors: [asAdmin] } },
    );
    clients = {
      runs: createClient(RunService, transport),
      fleets: createClient(FleetService, transport),
      instances: createClient(InstanceService, transport),
      offers: createClient(OfferService, transport),
      logs: createClient(LogService, transport),
    };
  });
  afterAll(async () => {
    await sched?.stop();
    await orm?.close(true);
    await env?.cleanup();
  });

  it("applies a fleet, plans, applies, lists, gets, watches, stops and deletes a run", async () => {
    const fc = conf("type: fleet\nname: gpus\nnodes: 0\n");
    const { fleet } = await clients.fleets.applyFleet({ projectName: "main", spec: { configuration: fc.kind.value as FleetConfiguration } });
    expect(fleet?.name).toBe("gpus");
    await svc.fleets.registerInstance(fleet!.id, { cpus: 16, memoryGb: 64, diskGb: 500, gpus: [{ vendor: "nvidia", name: "L4", memoryGb: 24 }] });
    expect((await clients.instances.listInstances({ projectNames: ["main"] })).instances.map((i) => [i.fleetName, i.totalBlocks])).toEqual([["gpus", 1]]);

    const offers = await clients.offers.listOffers({ projectName: "main", requirements: { resources: toProtoResources((parseConfiguration("type: task\ncommands: [x]\nresources: {gpu: L4}\n", "a.yml") as RunConfig).resources) } });
    expect(offers.offers.map((o) => [o.instance?.resources?.gpus[0]?.name, o.availability, o.price])).toEqual([["L4", Availability.IDLE, 0]]);

    const runSpec = { runName: "api-run", configuration: conf("type: task\ncommands: [nvidia-smi]\nresources: {gpu: L4}\n") };
    const { plan } = await clients.runs.getRunPlan({ projectName: "main", runSpec });
    expect(plan?.jobPlans[0]?.offers).toHaveLength(1);
    const { run } = await clients.runs.applyRun({ projectName: "main", runSpec });
    expect(run?.runSpec?.runName).toBe("api-run");
    await sched.idle();
    const got = (await clients.runs.getRun({ projectName: "main", run: { case: "runName", value: "api-run" } })).run!;
    expect(got.status).toBe(RunStatus.PROVISIONING);
    expect(got.jobs[0]?.jobSubmissions[0]?.jobProvisioningData?.fleetName).toBe("gpus");
    expect(got.latestJobSubmission?.status).toBe(JobStatus.PROVISIONING);
    const listed = await clients.runs.listRuns({ projectName: "main" });
    expect(listed.runs.map((r) => r.runSpec?.runName)).toEqual(["api-run"]);

    // logs: the runner's output arrives, the client reads it back
    const jobId = got.latestJobSubmission!.id;
    await svc.logs.append(jobId, 1, [{ timestamp: new Date(), source: "stdout", message: Buffer.from("GPU 0: L4\n") }]);
    const polled = await clients.logs.pollLogs({ projectName: "main", runName: "api-run" });
    expect(polled.logs.map((l) => Buffer.from(l.message).toString())).toEqual(["GPU 0: L4\n"]);

    const ac = new AbortController();
    const stream = clients.runs.watchRuns({ projectName: "main" }, { signal: ac.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value.run?.id).toBe(run!.id);
    expect((await stream.next()).value.initialStateSent).toBe(true);
    await clients.runs.stopRuns({ projectName: "main", runNames: ["api-run"], abort: true });
    let status = RunStatus.UNSPECIFIED;
    while (status !== RunStatus.TERMINATED) status = (await stream.next()).value.run?.status ?? status;
    ac.abort();
    await clients.runs.deleteRuns({ projectName: "main", runNames: ["api-run"] });
    expect((await clients.runs.listRuns({ projectName: "main" })).runs).toEqual([]);
  });

  it("uploads code by hash", async () => {
    const blob = Buffer.from(randomUUID());
    const { createHash } = await import("node:crypto");
    const codeHash = createHash("sha256").update(blob).digest("hex");
    expect((await clients.runs.uploadCode({ projectName: "main", codeHash, blob })).alreadyExists).toBe(false);
    expect((await clients.runs.uploadCode({ projectName: "main", codeHash, blob })).alreadyExists).toBe(true);
  });
});
