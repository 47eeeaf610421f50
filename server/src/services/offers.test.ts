import { parseConfiguration, type RunConfig } from "@dstack/proto";
import { describe, expect, it } from "vitest";
import { Instance, build } from "../db/entities.js";
import { InstanceStatus } from "../domain/enums.js";
import { blocksNeeded, fits, groupGpuOffers, offersFrom, resolveBlocks, type HostInfo, type OfferGroupDim, type OfferView } from "./offers.js";

const req = (resources: string) => (parseConfiguration(`type: task\ncommands: [x]\nresources: ${resources}\n`, "a.yml") as RunConfig).resources;
const host = (gpus: [string, number][] = [], cpus = 16, memoryGb = 64, arch: "x86" | "arm" = "x86"): HostInfo => ({
  cpus,
  cpuArch: arch,
  memoryGb,
  diskGb: 500,
  gpus: gpus.map(([name, memoryGb]) => ({ vendor: name.startsWith("MI") ? ("amd" as const) : ("nvidia" as const), name, memoryGb })),
});
const whole = (h: HostInfo) => ({ ...h, cpuArch: h.cpuArch ?? ("x86" as const) });

describe("offer matching", () => {
  it.each([
    ["{cpu: 4..}", host(), true],
    ["{cpu: 32..}", host(), false],
    ["{cpu: arm:4..}", host(), false],
    ["{cpu: arm:4..}", host([], 16, 64, "arm"), true],
    ["{memory: 128GB..}", host(), false],
    ["{memory: 32GB..64GB}", host(), true],
    ["{disk: 1TB..}", host(), false],
    ["{gpu: A100}", host([["A100", 80]]), true],
    ["{gpu: a100}", host([["A100", 80]]), true],
    ["{gpu: \"A10G,A100\"}", host([["A100", 80]]), true],
    ["{gpu: H100}", host([["A100", 80]]), false],
    ["{gpu: 80GB..}", host([["A100", 80]]), true],
    ["{gpu: 81GB..}", host([["A100", 80]]), false],
    ["{gpu: A100:2}", host([["A100", 80]]), false],
    ["{gpu: amd}", host([["A100", 80]]), false],
    ["{gpu: amd}", host([["MI300X", 192]]), true],
    ["{gpu: {total_memory: 160GB..}}", host([["A100", 80], ["A100", 80]]), true],
    ["{gpu: 0}", host([["A100", 80]]), false],
    ["{cpu: 2..}", host([["A100", 80]]), true], // gpu omitted: 0.. (optional)
  ] as const)("%s → %s", (r, h, expected) => {
    expect(fits(whole(h), req(r))).toBe(expected);
  });

  it("splits hosts into blocks and takes the fewest that fit", () => {
    const h = host([["A10", 24], ["A10", 24], ["A10", 24], ["A10", 24]], 32, 128);
    expect(resolveBlocks("auto", h)).toBe(4);
    expect(resolveBlocks("auto", host())).toBe(16);
    expect(blocksNeeded(h, 4, 4, req("{gpu: 2, cpu: 1.., memory: 1GB..}"))).toBe(2);
    expect(blocksNeeded(h, 4, 1, req("{gpu: 2, cpu: 1.., memory: 1GB..}"))).toBeNull();
    expect(blocksNeeded(h, 4, 4, req("{gpu: 1.., cpu: 16.., memory: 1GB..}"))).toBe(2); // CPUs decide
    expect(blocksNeeded(h, 4, 4, req("{gpu: 1, cpu: 16.., memory: 1GB..}"))).toBeNull(); // 16 CPUs come with 2 GPUs
    expect(blocksNeeded(h, 4, 4, req("{gpu: 1, cpu: 1.., memory: 1GB..}"), true)).toBeNull(); // whole host wanted
  });

  it("sorts usable offers first, then by price and size; busy only on request", () => {
    const mk = (name: string, h: HostInfo, price: number, busy = 0) => ({
      fleetName: "f",
      instance: build(Instance, { name, hostInfo: h as unknown as Record<string, unknown>, price, totalBlocks: 1, busyBlocks: busy, status: busy ? InstanceStatus.BUSY : InstanceStatus.IDLE }),
    });
    const c = [mk("big", host([["A100", 80], ["A100", 80]]), 0), mk("cheap", host([["A100", 80]]), 0), mk("taken", host([["A100", 80]]), 0, 1), mk("pricey", host([["A100", 80]]), 3)];
    const r = req("{gpu: A100:1..}");
    expect(offersFrom(c, { resources: r }).map((o) => o.instanceName)).toEqual(["cheap", "big", "pricey"]);
    expect(offersFrom(c, { resources: r, includeBusy: true }).map((o) => [o.instanceName, o.availability])).toEqual([
      ["cheap", "idle"],
      ["big", "idle"],
      ["pricey", "idle"],
      ["taken", "busy"],
    ]);
    expect(offersFrom(c, { resources: r, maxPrice: 1 }).map((o) => o.instanceName)).toEqual(["cheap", "big"]);
    expect(offersFrom(c, { resources: r, fleets: ["other"] })).toEqual([]);
  });
});

describe("GPU offer groups (dstack offer --group-by)", () => {
  const offer = (backend: string, region: string, gpus: [string, number][], price: number, availability: OfferView["availability"] = "idle"): OfferView => ({
    fleetName: "f",
    instanceId: `${backend}-${region}-${price}`,
    instanceName: `${backend}-${region}`,
    backend,
    region,
    resources: whole(host(gpus)),
    price,
    availability,
    blocks: 1,
    totalBlocks: 1,
  });
  const a100 = (n: number): [string, number][] => Array.from({ length: n }, () => ["A100", 80] as [string, number]);
  const offers = [
    offer("aws", "us-east-1", a100(1), 2),
    offer("aws", "us-west-2", a100(2), 3), // $1.5 per GPU
    offer("gcp", "europe-west4", a100(1), 2.5),
    offer("gcp", "europe-west4", [["H100", 80]], 4, "busy"),
    offer("remote", "", [], 0), // no GPUs: not a GPU offer
  ];
  const group = (...by: OfferGroupDim[]) => groupGpuOffers(offers, new Set(by));
  const row = (g: ReturnType<typeof group>[number]) => [g.name, g.countMin, g.countMax, g.priceMin, g.priceMax, g.backends.join(","), g.regions.join(","), g.availability];

  it("by GPU alone: one row per GPU kind, per-GPU price range, every backend; busy kinds last", () => {
    expect(group().map(row)).toEqual([
      ["A100", 1, 2, 1.5, 2.5, "aws,gcp", "", "idle"],
      ["H100", 1, 1, 4, 4, "gcp", "", "busy"],
    ]);
  });

  it("by backend: one row per backend with the backend's regions", () => {
    expect(group("backend").map(row)).toEqual([
      ["A100", 1, 2, 1.5, 2, "aws", "us-east-1,us-west-2", "idle"],
      ["A100", 1, 1, 2.5, 2.5, "gcp", "europe-west4", "idle"],
      ["H100", 1, 1, 4, 4, "gcp", "europe-west4", "busy"],
    ]);
  });

  it("by backend, region and count: one row per combination", () => {
    expect(group("backend", "region", "count").map(row)).toEqual([
      ["A100", 2, 2, 1.5, 1.5, "aws", "us-west-2", "idle"],
      ["A100", 1, 1, 2, 2, "aws", "us-east-1", "idle"],
      ["A100", 1, 1, 2.5, 2.5, "gcp", "europe-west4", "idle"],
      ["H100", 1, 1, 4, 4, "gcp", "europe-west4", "busy"],
    ]);
  });

  it("by count: one row per GPU count", () => {
    expect(group("count").map(row)).toEqual([
      ["A100", 2, 2, 1.5, 1.5, "aws", "", "idle"],
      ["A100", 1, 1, 2, 2.5, "aws,gcp", "", "idle"],
      ["H100", 1, 1, 4, 4, "gcp", "", "busy"],
    ]);
  });

  it("refuses region without backend", () => {
    expect(() => group("region")).toThrow(/cannot group by 'region' without also grouping by 'backend'/);
  });
});
