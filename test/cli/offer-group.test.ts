// `dstack offer --group-by` through the `dstack` binary against a REAL server process (SQLite).
// The project's fleet holds GPU hosts of several backends and regions (registered through the
// services on the server's database while it is stopped, as an admin's hosts joining would
// record them; a CPU-only host shows that only GPU offers are grouped). The server groups the
// offers; the CLI prints dstack's filter header and GPU table, or JSON, and rejects bad fields.
import { parseConfiguration, type FleetConfig } from "@dstack/proto";
import { OfferGroupBy } from "@dstack/proto/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "../../cli/src/index.js";
import { openDatabase } from "../../server/src/db/database.js";
import { createServices } from "../../server/src/services/index.js";
import type { HostInfo } from "../../server/src/services/offers.js";
import { loadSettings } from "../../server/src/settings.js";
import { createServerEnv, startServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { dstack, type CliRun } from "./run-cli.js";

const SLOW = 120_000;
const gpuHost = (name: string, count: number): HostInfo => ({ cpus: 16, memoryGb: 128, diskGb: 500, gpus: Array.from({ length: count }, () => ({ vendor: "nvidia" as const, name, memoryGb: 80 })) });

let where: ServerEnv;
let server: TestServer;
let cli: CliRun;

beforeAll(async () => {
  where = await createServerEnv("sqlite");
  const first = await startServer(where);
  expect(await first.stop()).toBe(0);
  const settings = loadSettings({ ...process.env, DSTACK_SERVER_ADMIN_TOKEN: "", ...where.env });
  const orm = await openDatabase(settings.database);
  try {
    const svc = createServices(orm, settings);
    const admin = await svc.users.authenticate(first.adminToken);
    const fleet = await svc.fleets.apply(admin, "main", parseConfiguration("type: fleet\nname: gpus\nnodes: 0\n", "fleet.dstack.yml") as FleetConfig);
    await svc.fleets.registerInstance(fleet.id, gpuHost("A100", 1), { backend: "aws", region: "us-east-1", price: 2 });
    await svc.fleets.registerInstance(fleet.id, gpuHost("A100", 2), { backend: "aws", region: "us-west-2", price: 3 });
    await svc.fleets.registerInstance(fleet.id, gpuHost("A100", 1), { backend: "gcp", region: "europe-west4", price: 2.5 });
    await svc.fleets.registerInstance(fleet.id, gpuHost("H100", 1), { backend: "gcp", region: "europe-west4", price: 4 });
    await svc.fleets.registerInstance(fleet.id, gpuHost("none", 0), { backend: "remote", region: "", price: 0 });
  } finally {
    await orm.close(true);
  }
  server = await startServer(where);
  cli = { home: where.home };
}, SLOW);

afterAll(async () => {
  if (server) expect(await server.stop()).toBe(0);
  await where?.cleanup();
});

/** The table's lines with runs of spaces squeezed, so the assertions read like the output. */
const lines = (out: string) => out.split("\n").map((l) => l.trim().replace(/\s{2,}/g, " | "));

describe("dstack offer --group-by", () => {
  it(
    "gpu: one row per GPU kind with the per-GPU price range and every backend, after dstack's filter header",
    async () => {
      const r = await dstack(["offer", "--group-by", "gpu"], cli);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^ Project\s+main$/m);
      expect(r.stdout).toMatch(/^ Resources\s+cpu=\S+ mem=\S+ disk=\S+/m);
      expect(r.stdout).toMatch(/^ Group by\s+gpu$/m);
      const out = lines(r.stdout);
      expect(out).toContain("# | GPU | SPOT | $/GPU | BACKENDS");
      expect(out).toContain("1 | A100:80GB:1..2 | on-demand | 1.5..2.5 | aws, gcp");
      expect(out).toContain("2 | H100:80GB:1 | on-demand | 4 | gcp");
      expect(r.stdout).not.toContain("ssh"); // the CPU-only host has no GPU offer
    },
    SLOW,
  );

  it(
    "gpu,backend: one row per backend, with that backend's regions",
    async () => {
      const out = lines((await dstack(["offer", "--group-by", "gpu,backend"], cli)).stdout);
      expect(out).toContain("# | GPU | SPOT | $/GPU | BACKEND | REGIONS");
      const rows = out.filter((l) => /^\d+ \|/.test(l));
      expect(rows).toEqual([
        "1 | A100:80GB:1..2 | on-demand | 1.5..2 | aws | us-east-1, us-west-2",
        "2 | A100:80GB:1 | on-demand | 2.5 | gcp | europe-west4",
        "3 | H100:80GB:1 | on-demand | 4 | gcp | europe-west4",
      ]);
    },
    SLOW,
  );

  it(
    "gpu,backend,region,count (repeated or comma-separated): one row per combination; --gpu filters",
    async () => {
      const r = await dstack(["offer", "--group-by", "gpu", "--group-by", "backend,region", "--group-by", "count"], cli);
      const out = lines(r.stdout);
      expect(r.stdout).toMatch(/^ Group by\s+gpu, backend, region, count$/m);
      expect(out).toContain("# | GPU | SPOT | $/GPU | BACKEND | REGION");
      expect(out.filter((l) => /^\d+ \|/.test(l))).toEqual([
        "1 | A100:80GB:2 | on-demand | 1.5 | aws | us-west-2",
        "2 | A100:80GB:1 | on-demand | 2 | aws | us-east-1",
        "3 | A100:80GB:1 | on-demand | 2.5 | gcp | europe-west4",
        "4 | H100:80GB:1 | on-demand | 4 | gcp | europe-west4",
      ]);
      const h100 = lines((await dstack(["offer", "--gpu", "H100", "--group-by", "gpu,backend,region,count"], cli)).stdout).filter((l) => /^\d+ \|/.test(l));
      expect(h100).toEqual(["1 | H100:80GB:1 | on-demand | 4 | gcp | europe-west4"]);
      const none = await dstack(["offer", "--gpu", "B200", "--group-by", "gpu"], cli);
      expect([none.code, none.stdout]).toEqual([0, expect.stringMatching(/No matching instance offers available/)]);
    },
    SLOW,
  );

  it(
    "--json gives the groups as data",
    async () => {
      const r = await dstack(["offer", "--group-by", "gpu,count", "--json"], cli);
      expect(r.code).toBe(0);
      const j = JSON.parse(r.stdout) as { project: string; groupBy: string[]; gpus: Record<string, unknown>[] };
      expect([j.project, j.groupBy]).toEqual(["main", ["gpu", "count"]]);
      expect(j.gpus).toEqual([
        { name: "A100", memoryMib: "81920", vendor: "ACCELERATOR_VENDOR_NVIDIA", countMin: 2, countMax: 2, price: { min: 1.5, max: 1.5 }, backends: ["BACKEND_TYPE_AWS"], availability: "AVAILABILITY_IDLE" },
        { name: "A100", memoryMib: "81920", vendor: "ACCELERATOR_VENDOR_NVIDIA", countMin: 1, countMax: 1, price: { min: 2, max: 2.5 }, backends: ["BACKEND_TYPE_AWS", "BACKEND_TYPE_GCP"], availability: "AVAILABILITY_IDLE" },
        { name: "H100", memoryMib: "81920", vendor: "ACCELERATOR_VENDOR_NVIDIA", countMin: 1, countMax: 1, price: { min: 4, max: 4 }, backends: ["BACKEND_TYPE_GCP"], availability: "AVAILABILITY_IDLE" },
      ]);
    },
    SLOW,
  );

  it(
    "rejects fields dstack rejects, in the CLI (exit 2) and on the server",
    async () => {
      const zone = await dstack(["offer", "--group-by", "gpu,zone"], cli);
      expect([zone.code, zone.stderr]).toEqual([2, expect.stringContaining("Invalid group-by value: 'zone'. Valid choices are: backend, count, gpu, region")]);
      const noGpu = await dstack(["offer", "--group-by", "backend"], cli);
      expect([noGpu.code, noGpu.stderr]).toEqual([2, expect.stringContaining("Cannot group by 'backend' without also grouping by 'gpu'")]);
      const region = await dstack(["offer", "--group-by", "gpu,region"], cli);
      expect([region.code, region.stderr]).toEqual([2, expect.stringContaining("Cannot group by 'region' without also grouping by 'backend'")]);
      // Other clients get the same checks from the server.
      const client = Client.fromConfig({ env: { HOME: where.home } });
      await expect(client.offers.list({ groupBy: [OfferGroupBy.BACKEND] })).rejects.toThrow(/grouping needs 'gpu'/);
      await expect(client.offers.list({ groupBy: [OfferGroupBy.GPU, OfferGroupBy.REGION] })).rejects.toThrow(/cannot group by 'region' without also grouping by 'backend'/);
    },
    SLOW,
  );
});
